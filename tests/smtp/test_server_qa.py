"""Faults a fresh user (QA) found in the server core, each pinned by a test.

- ``RCPT TO:<x@[127.0.0.1]>`` was accepted and bounced later ("domain not
  found in DNS"); the relay must never deliver to an IP the sender chose, so
  an address-literal recipient is refused at RCPT with 550 5.1.2.
"""

from __future__ import annotations

import pytest
from test_server_driver import codes, ready

from tlsrelay.smtp import replies

MAIL = b"MAIL FROM:<a@example.com>\r\n"


@pytest.mark.parametrize(
    "path", [b"<x@[127.0.0.1]>", b"<x@[IPv6:2001:db8::1]>", b"<@a.example:x@[8.8.8.8]>"]
)
def test_address_literal_recipient_is_refused_at_rcpt(path):
    peer = ready()
    got = peer.send(MAIL + b"RCPT TO:" + path + b"\r\n")
    assert got == [str(replies.SENDER_OK), str(replies.LITERAL_RECIPIENT)]
    assert codes(got[1:]) == ["550 5.1.2"]


def test_address_literal_stays_allowed_in_mail_from_and_ehlo():
    peer = ready()
    got = peer.send(
        b"EHLO [192.0.2.1]\r\nMAIL FROM:<a@[192.0.2.1]>\r\nRCPT TO:<b@example.org>\r\n"
    )
    assert codes(got)[1:] == ["250 2.1.0", "250 2.1.5"]
    assert got[0].startswith("250-relay.example.net")
