"""Delivery status notifications (RFC 3464) for failed, expired and delayed
mail.

A DSN is a multipart/report (RFC 6522) of three parts: a human-readable
text, the machine-readable message/delivery-status (per-message fields
Reporting-MTA, Original-Envelope-Id, Arrival-Date; per-recipient fields
Final-Recipient, Original-Recipient, Action, Status, Remote-MTA,
Diagnostic-Code, Last-Attempt-Date), and the returned message: headers only
for RET=HDRS and for delay reports (text/rfc822-headers), the whole
message otherwise (message/rfc822). When an address or the report itself
is not ASCII, the RFC 6533 forms are used (message/global-delivery-status,
"utf-8;" types).

The DSN goes to the original sender with the null reverse-path (RFC 5321
6.1, RFC 3461 6.2), with origin "dsn" so that it can never bounce itself.
`report()` works from the content's facts alone and leaves the returned
message to be copied from the spool in chunks, so a large message is never
held in memory; `build()` is the same over bytes in memory.

Nothing here decides *whether* a DSN is due (policy.dsn_wanted and
policy.bounces_allowed do); this module only writes one. Header values are
stripped of control characters, so no address can inject a header line.
"""

from __future__ import annotations

import email.utils
import re
import secrets
from dataclasses import dataclass

from tlsrelay.relay import spool
from tlsrelay.smtp import client

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_XTEXT_HEX = re.compile(r"\+([0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class ReportItem:
    """One recipient's line in the report."""

    address: str
    orcpt: str | None
    action: str  # "failed", "delayed", "delivered", "relayed", "expanded"
    status: str  # RFC 3463, e.g. "5.1.1"
    diagnostic: str  # the reply text, e.g. "550 5.1.1 No such user"
    remote_mta: str  # host name of the server that answered, "" if none
    remote: bool  # the diagnostic is the server's SMTP reply


def _clean(text: str) -> str:
    return _CONTROL.sub(" ", text)


def xtext_decode(value: str) -> str:
    """RFC 3461 4: "+XX" is the octet XX."""
    return _XTEXT_HEX.sub(lambda m: chr(int(m.group(1), 16)), value)


def _address_field(address: str) -> str:
    kind = "rfc822" if address.isascii() else "utf-8"
    return f"{kind}; {_clean(address)}"


def _date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def _recipient_block(item: ReportItem, now: float) -> list[str]:
    lines = [f"Final-Recipient: {_address_field(item.address)}"]
    if item.orcpt and ";" in item.orcpt:
        kind, _, value = item.orcpt.partition(";")
        lines.append(f"Original-Recipient: {kind}; {_clean(xtext_decode(value))}")
    lines += [f"Action: {item.action}", f"Status: {item.status}"]
    if item.remote_mta:
        lines.append(f"Remote-MTA: dns; {_clean(item.remote_mta)}")
    if item.diagnostic:
        kind = "smtp" if item.remote else "X-tlsrelay"
        lines.append(f"Diagnostic-Code: {kind}; {_clean(item.diagnostic)}")
    lines.append(f"Last-Attempt-Date: {_date(now)}")
    return lines


def _delayed(items: list[ReportItem]) -> bool:
    return all(item.action == "delayed" for item in items)


def _human_text(queue_id: str, reporting_mta: str, items: list[ReportItem]) -> str:
    summary = (
        "Your message has not been delivered yet to one or more recipients;"
        " the relay keeps trying, and you need not send it again."
        if _delayed(items)
        else "Your message could not be delivered to one or more recipients."
    )
    lines = [
        f"This is the mail system at host {reporting_mta}.",
        "",
        summary,
        f"Its queue id was {queue_id}.",
        "",
    ]
    for item in items:
        lines.append(f"<{_clean(item.address)}>: {_clean(item.diagnostic)}")
    return "\r\n".join(lines) + "\r\n"


@dataclass(frozen=True)
class Report:
    """A DSN around the original: HEAD, then the first RETURNED octets of the
    original content copied from the spool, then TAIL."""

    envelope: spool.Envelope
    head: bytes
    returned: int
    tail: bytes


def _subject(items: list[ReportItem]) -> str:
    if _delayed(items):
        return "Delayed Mail (still being retried)"
    return "Undelivered Mail Returned to Sender"


def build(
    *,
    queue_id: str,
    envelope: spool.Envelope,
    content: bytes,
    items: list[ReportItem],
    reporting_mta: str,
    postmaster: str,
    now: float,
) -> tuple[spool.Envelope, bytes]:
    """The DSN's envelope and content, ready for spool.enqueue."""
    found = report(
        queue_id=queue_id,
        envelope=envelope,
        facts=client.ContentFacts.of(content),
        items=items,
        reporting_mta=reporting_mta,
        postmaster=postmaster,
        now=now,
    )
    return found.envelope, found.head + content[: found.returned] + found.tail


def _returned(
    headers_only: bool, facts: client.ContentFacts
) -> tuple[int, str, bool, bool]:
    """(octets, content type, 8-bit, ends with CRLF) of the returned part."""
    if headers_only:
        blank_line_found = facts.header_size < facts.size
        ends = blank_line_found or facts.ends_with_crlf
        return facts.header_size, "text/rfc822-headers", facts.header_8bit, ends
    return facts.size, "message/rfc822", facts.eight_bit, facts.ends_with_crlf


def report(
    *,
    queue_id: str,
    envelope: spool.Envelope,
    facts: client.ContentFacts,
    items: list[ReportItem],
    reporting_mta: str,
    postmaster: str,
    now: float,
) -> Report:
    """The DSN for a message known by its content FACTS, without its content."""
    status_lines = [f"Reporting-MTA: dns; {_clean(reporting_mta)}"]
    if envelope.envid:
        status_lines.append(f"Original-Envelope-Id: {_clean(envelope.envid)}")
    if envelope.arrived:
        status_lines.append(f"Arrival-Date: {_date(envelope.arrived)}")
    for item in items:
        status_lines += [""] + _recipient_block(item, now)
    status = "\r\n".join(status_lines) + "\r\n"
    text = _human_text(queue_id, reporting_mta, items)
    is_global = not (status.isascii() and text.isascii())
    report_type = "global-delivery-status" if is_global else "delivery-status"

    # RET applies to failures (RFC 3461 4.3); a delay report returns headers.
    headers_only = (envelope.ret or "").upper() == "HDRS" or _delayed(items)
    returned, returned_type, returned_8bit, returned_ends = _returned(
        headers_only, facts
    )
    cte = "8bit" if returned_8bit else "7bit"

    boundary = f"{queue_id}.{secrets.token_hex(8)}/{_clean(reporting_mta)}"
    sender = _clean(envelope.sender)
    head = [
        f"From: Mail Delivery System <{_clean(postmaster)}>",
        f"To: <{sender}>",
        f"Subject: {_subject(items)}",
        f"Date: {_date(now)}",
        f"Message-ID: <{queue_id}.{secrets.token_hex(6)}@{_clean(reporting_mta)}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f"Content-Type: multipart/report; report-type={report_type};",
        f'\tboundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Transfer-Encoding: {'7bit' if text.isascii() else '8bit'}",
        "",
    ]
    parts = "\r\n".join(head).encode() + b"\r\n" + text.encode()
    parts += (
        f"\r\n--{boundary}\r\nContent-Type: message/{report_type}\r\n\r\n".encode()
        + status.encode()
    )
    parts += (
        f"\r\n--{boundary}\r\n"
        f"Content-Type: {returned_type}\r\n"
        f"Content-Transfer-Encoding: {cte}\r\n\r\n".encode()
    )
    tail = b"" if returned_ends else b"\r\n"
    tail += f"\r\n--{boundary}--\r\n".encode()

    eight_bit = returned_8bit or not (parts.isascii() and tail.isascii())
    dsn_envelope = spool.Envelope(
        sender="",
        recipients=[spool.Recipient(envelope.sender)],
        body="8BITMIME" if eight_bit else "7BIT",
        smtputf8=not envelope.sender.isascii() or is_global,
        location=envelope.location,
        arrived=now,
        origin="dsn",
    )
    return Report(dsn_envelope, parts, returned, tail)
