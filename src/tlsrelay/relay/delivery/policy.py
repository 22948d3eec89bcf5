"""Pure decisions of delivery: outcome of a reply, retry timing, TLS level.

Each is a small function over plain values, tested by a table, so the
scheduler never decides anything inline:

- `status_of(reply)`: 2xx delivered, 4xx deferred, 5xx failed (RFC 5321
  4.2.1); connection failures arrive as local 4xx replies, so they defer.
- `backoff_s(attempts, minimal_s, maximal_s)`: Postfix-like doubling from
  minimal_backoff_s up to maximal_backoff_s (defaults in config.py).
- `expired(...)`: a message older than the queue lifetime is returned.
- `tls_level_for(domain, ...)`: the TLS level a destination gets and why.
  Opportunistic (`may`) for now; DANE and MTA-STS plug in here later,
  deciding before the session starts, never during it.

Scopes say how far a failure reaches (Postfix's words): a recipient (RCPT
reply), the message (MAIL, DATA or a content check) or the site (connection,
greeting, EHLO, TLS): a site failure defers every message waiting for that
destination in this round without connecting again.

Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tlsrelay.relay import spool
from tlsrelay.smtp.client import Reply, TlsLevel


class Scope(enum.Enum):
    RECIPIENT = "recipient"
    MESSAGE = "message"
    SITE = "site"


@dataclass(frozen=True)
class Outcome:
    """The result of one attempt for one recipient."""

    status: str  # spool.DELIVERED, DEFERRED or FAILED
    reply: Reply
    remote: bool  # the reply came from the server
    scope: Scope
    relay: str = ""  # host[ip]:port, "" when no server was reached
    tls: str = "none"


# First digit of the reply code -> recipient status.
_STATUS_BY_CLASS = {
    2: spool.DELIVERED,
    3: spool.DEFERRED,  # a 3xx as a final reply is a broken server: retry
    4: spool.DEFERRED,
    5: spool.FAILED,
}


def status_of(reply: Reply) -> str:
    return _STATUS_BY_CLASS.get(reply.code // 100, spool.DEFERRED)


def outcome(
    reply: Reply, remote: bool, scope: Scope, relay: str = "", tls: str = "none"
) -> Outcome:
    return Outcome(status_of(reply), reply, remote, scope, relay, tls)


def backoff_s(attempts: int, minimal_s: float, maximal_s: float) -> float:
    """Delay before the next try after ATTEMPTS tries (1 = the first one)."""
    if attempts < 1:
        return 0.0
    # Capping the exponent keeps the float finite for absurd counts.
    return min(minimal_s * 2.0 ** min(attempts - 1, 64), maximal_s)


def expired(arrived: float, now: float, lifetime_s: float) -> bool:
    return now - arrived >= lifetime_s


@dataclass(frozen=True)
class TlsDecision:
    level: TlsLevel
    reason: str


def tls_level_for(domain: str, routed: bool) -> TlsDecision:
    """The TLS a destination gets. Strict policies are a later issue."""
    if routed:
        return TlsDecision(TlsLevel.MAY, "route: opportunistic")
    return TlsDecision(TlsLevel.MAY, "no DANE or MTA-STS policy: opportunistic")


def dsn_wanted(notify: str | None, status: str) -> bool:
    """RFC 3461 5.2.3: a failure DSN unless NOTIFY excludes FAILURE."""
    if status != spool.FAILED:
        return False
    if notify is None:
        return True
    return "FAILURE" in notify.upper().split(",")


def delay_dsn_wanted(
    notify: str | None, status: str, age_s: float, delay_warning_s: float
) -> bool:
    """RFC 3461 5.2.3: a delay DSN once a recipient has waited delay_warning_s
    (0 = never, the default), unless NOTIFY was given without DELAY."""
    if status != spool.DEFERRED or delay_warning_s <= 0 or age_s < delay_warning_s:
        return False
    return notify is None or "DELAY" in notify.upper().split(",")


def bounces_allowed(envelope: spool.Envelope) -> bool:
    """RFC 5321 6.1 and case 24: a bounce or notice never bounces."""
    return envelope.sender != "" and envelope.origin == "smtp"
