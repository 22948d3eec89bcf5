"""The `Received:` trace header the listener puts in front of each message.

RFC 5321 section 4.4 (trace information) and the `Received:` grammar of
RFC 5321 4.4 / RFC 5322 3.6.7: a `from` clause with the client's EHLO name
and address, `by` our host name, `with` the protocol, `id` the queue id,
`for` the recipient when there is exactly one, then `;` and the date.
Protocol names come from RFC 3848 (ESMTPS: ESMTP with STARTTLS or TLS on
connect) and RFC 6531 (UTF8SMTPS); the TLS version and cipher go in a
comment, as Postfix writes them.

Everything the peer chose (EHLO name, recipient) is reduced to printable
ASCII that cannot end the header or break its comment structure: no
control characters, no non-ASCII octets, no spaces or parentheses. This module never
adds any other header and never changes the message itself.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from email.utils import formatdate

# Characters kept from peer-supplied words; anything else becomes "?".  Only
# printable ASCII: the server core refuses non-ASCII EHLO names, and this is
# the second line of defence (a UTF-8 recipient under SMTPUTF8 loses its
# non-ASCII characters here, which only costs readability of the header).
_SAFE_WORD = re.compile(r"[^A-Za-z0-9.\-_:\[\]@+=/!#$%&'*^`{|}~]")
_MAX_WORD = 255


@dataclass(frozen=True)
class TraceInfo:
    helo: str  # the EHLO/HELO argument as given
    client_ip: str
    hostname: str  # ours
    esmtp: bool  # EHLO rather than HELO
    tls_version: str = ""  # "" without TLS
    tls_cipher: str = ""
    tls_bits: int = 0
    smtputf8: bool = False


def protocol(info: TraceInfo) -> str:
    """RFC 3848 / RFC 6531 `with` keyword for this session."""
    if not info.esmtp:
        return "SMTP"
    if info.smtputf8:
        return "UTF8SMTPS" if info.tls_version else "UTF8SMTP"
    return "ESMTPS" if info.tls_version else "ESMTP"


def clean(word: str) -> str:
    """A peer-supplied word made safe inside a header: no CR, LF, space, parens."""
    return _SAFE_WORD.sub("?", word[:_MAX_WORD]) or "unknown"


def received(
    info: TraceInfo,
    queue_id: str,
    recipients: list[str],
    now: float | None = None,
) -> bytes:
    """The folded header, CRLF-terminated, ready to go before the content."""
    address = f"IPv6:{info.client_ip}" if ":" in info.client_ip else info.client_ip
    lines = [f"Received: from {clean(info.helo)} ([{address}])"]
    if info.tls_version:
        tls = f"(using {info.tls_version} with cipher {info.tls_cipher}"
        if info.tls_bits:
            tls += f" ({info.tls_bits} bits)"
        lines.append(tls + ")")
    lines.append(f"by {info.hostname} (tlsrelay) with {protocol(info)} id {queue_id}")
    when = formatdate(time.time() if now is None else now, localtime=True)
    if len(recipients) == 1:
        lines.append(f"for <{clean(recipients[0])}>")
    lines[-1] += ";"
    lines.append(when)
    return ("\r\n\t".join(lines) + "\r\n").encode("utf-8")
