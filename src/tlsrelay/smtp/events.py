"""Events the SMTP server core hands to the application, and its envelope type.

The core (server.py) turns bytes into these events.  Some of them need the
application's decision before the core parses any further input:
:class:`MailFrom`, :class:`RcptTo`, :class:`DataStart` and :class:`MessageEnd`.
The others only inform.  :data:`NEED_DATA` and :data:`CLOSED` are sentinels,
not events: the core needs more bytes, or the session is over.

Nothing here does I/O or parsing; these are plain values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from tlsrelay.smtp.replies import Reply


class Sentinel(enum.Enum):
    NEED_DATA = "need-data"
    CLOSED = "closed"


NEED_DATA = Sentinel.NEED_DATA
CLOSED = Sentinel.CLOSED


@dataclass(frozen=True)
class MailParams:
    """The ESMTP parameters of MAIL FROM that the core understood (validated)."""

    size: int | None = None  # RFC 1870 SIZE=, the client's estimate
    body: str | None = None  # RFC 6152 BODY=7BIT|8BITMIME, upper case
    smtputf8: bool = False  # RFC 6531
    ret: str | None = None  # RFC 3461 RET=FULL|HDRS, upper case
    envid: str | None = None  # RFC 3461 ENVID=, still xtext-encoded


@dataclass(frozen=True)
class RcptParams:
    """The ESMTP parameters of RCPT TO (RFC 3461), validated, as given."""

    notify: str | None = None  # "NEVER" or a comma list of SUCCESS,FAILURE,DELAY
    orcpt: str | None = None  # "addr-type;xtext", still xtext-encoded


@dataclass(frozen=True)
class Recipient:
    address: str
    notify: str | None = None
    orcpt: str | None = None


@dataclass
class Envelope:
    """One transaction's envelope as accepted; field names follow spool.Envelope."""

    sender: str  # "" is the null reverse-path
    recipients: list[Recipient] = field(default_factory=list)
    ret: str | None = None
    envid: str | None = None
    # "8BITMIME" when declared, and also when undeclared 8-bit octets arrived
    # (the core's policy: such content is treated as 8BITMIME, never rejected).
    body: str = "7BIT"
    smtputf8: bool = False
    size: int = 0  # octets of content received (after dot-unstuffing)


@dataclass(frozen=True)
class Hello:
    """EHLO or HELO was accepted (the core has replied)."""

    name: str
    esmtp: bool


@dataclass(frozen=True)
class MailFrom:
    """Decide: ``conn.accept()`` (250 2.1.0) or ``conn.reject(reply)``."""

    sender: str  # "" for the null reverse-path
    params: MailParams


@dataclass(frozen=True)
class RcptTo:
    """Decide: ``conn.accept()`` (250 2.1.5) or ``conn.reject(reply)``.

    ``address`` has any source route stripped (RFC 5321 appendix F.2).
    """

    address: str
    params: RcptParams


@dataclass(frozen=True)
class DataStart:
    """DATA, or the first BDAT of a transaction, with a valid envelope.

    Decide: ``conn.accept()`` (354 for DATA; BDAT is answered when its chunk
    is read) or ``conn.reject(reply)``; a rejected BDAT chunk is still read and
    discarded, and the transaction is reset either way on reject.
    """

    envelope: Envelope
    chunking: bool  # True for BDAT


@dataclass(frozen=True)
class Body:
    """A piece of message content: dot-unstuffed for DATA, as sent for BDAT."""

    data: bytes


@dataclass(frozen=True)
class MessageEnd:
    """The real end of content.  Decide: ``conn.accept_message(queue_id)``
    (250 2.0.0 with the id) or ``conn.reject(reply)``."""

    envelope: Envelope


@dataclass(frozen=True)
class MessageAborted:
    """Content that was started is dropped; discard what Body gave so far.

    ``reply`` is what the core already queued (line too long, bare CR/LF, too
    big), or None when the peer went away mid-message (``reason`` "eof").
    """

    reply: Reply | None
    reason: str


@dataclass(frozen=True)
class StartTLS:
    """The core queued 220 2.0.0 and discarded all input after STARTTLS.

    Flush ``data_to_send()``, do the handshake, then ``conn.tls_started()``.
    """


@dataclass(frozen=True)
class ConnectionClosed:
    """The session is over: flush ``data_to_send()`` and close.

    ``reason``: "quit", "eof", "early-talker", "too-many-errors",
    "too-many-commands", "bdat-syntax", "internal-error" or "app".
    """

    reason: str


Event = (
    Hello
    | MailFrom
    | RcptTo
    | DataStart
    | Body
    | MessageEnd
    | MessageAborted
    | StartTLS
    | ConnectionClosed
)
