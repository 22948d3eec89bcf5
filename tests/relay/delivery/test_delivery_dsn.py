"""RFC 3464 reports as dsn.build writes them."""

from __future__ import annotations

import email
import email.policy

import pytest

from tlsrelay.relay import spool
from tlsrelay.relay.delivery import dsn

CONTENT = b"Subject: hi\r\nX-Tag: 1\r\n\r\nbody line\r\n"


def build(ret=None, sender="a@example.com", address="b@example.org"):
    envelope = spool.Envelope(
        sender, [spool.Recipient(address)], ret=ret, arrived=1_800_000_000.0
    )
    item = dsn.ReportItem(
        address, None, "failed", "5.1.1", "550 5.1.1 No", "mx.example.org", True
    )
    return dsn.build(
        queue_id="Q1",
        envelope=envelope,
        content=CONTENT,
        items=[item],
        reporting_mta="relay.example.net",
        postmaster="MAILER-DAEMON@relay.example.net",
        now=1_800_000_100.0,
    )


@pytest.mark.parametrize(
    "ret, part_type, has_body",
    [
        (None, "message/rfc822", True),
        ("FULL", "message/rfc822", True),
        ("HDRS", "text/rfc822-headers", False),
    ],
)
def test_returned_content_follows_ret(ret, part_type, has_body):
    envelope, content = build(ret)
    message = email.message_from_bytes(content, policy=email.policy.SMTP)
    parts = message.get_payload()
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        part_type,
    ]
    assert (b"body line" in content) is has_body
    assert b"X-Tag: 1\r\n" in content
    assert envelope.sender == "" and envelope.origin == "dsn"
    assert message["Auto-Submitted"] == "auto-replied"


def test_every_line_ends_in_crlf():
    _, content = build()
    assert content.count(b"\n") == content.count(b"\r\n")
    assert content.count(b"\r") == content.count(b"\r\n")


def test_addresses_cannot_inject_header_lines():
    _, content = build(sender="a@example.com\r\nBcc: victim@example.net")
    head = content.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in head


def test_xtext_decode():
    assert dsn.xtext_decode("a+2Bb+3Dc+40d") == "a+b=c@d"
