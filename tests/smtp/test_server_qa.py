"""Faults a fresh user (QA) found in the server core, each pinned by a test.

- ``RCPT TO:<x@[127.0.0.1]>`` was accepted and bounced later ("domain not
  found in DNS"); the relay must never deliver to an IP the sender chose, so
  an address-literal recipient is refused at RCPT with 550 5.1.2.
- An address with octets that are not UTF-8 got 553 5.6.7 "Must declare
  SMTPUTF8"; it is bad syntax: 501 5.1.7 (MAIL) or 501 5.1.3 (RCPT), with or
  without SMTPUTF8.
- ``BDAT abc`` got 501 5.5.4 and the connection was closed without a word;
  a server that closes says 421 (RFC 5321 3.8): 501, then 421 4.5.0.
- ``EHLO évil.example`` (and control characters) was accepted and ended up
  raw in the Received: header; such an argument is now 501 5.5.2, while the
  names customers' Postfix sends (underscores, trailing dot, one label)
  still pass.
"""

from __future__ import annotations

import pytest
from test_server_driver import Peer, codes, ready

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


@pytest.mark.parametrize("smtputf8", [b"", b" SMTPUTF8"])
def test_invalid_utf8_in_mail_from_is_a_syntax_error(smtputf8):
    peer = ready()
    got = peer.send(b"MAIL FROM:<a\xff\xfe@example.com>" + smtputf8 + b"\r\n")
    assert got == [str(replies.BAD_SENDER)]
    assert codes(got) == ["501 5.1.7"]


@pytest.mark.parametrize("smtputf8", [b"", b" SMTPUTF8"])
def test_invalid_utf8_in_rcpt_to_is_a_syntax_error(smtputf8):
    peer = ready()
    got = peer.send(
        b"MAIL FROM:<a@example.com>" + smtputf8 + b"\r\nRCPT TO:<b@ex\xc3.org>\r\n"
    )
    assert got == [str(replies.SENDER_OK), str(replies.BAD_RECIPIENT)]
    assert codes(got[1:]) == ["501 5.1.3"]


def test_valid_utf8_without_smtputf8_still_needs_the_declaration():
    peer = ready()
    got = peer.send("MAIL FROM:<é@example.com>\r\n".encode())
    assert got == [str(replies.NEED_SMTPUTF8)]


@pytest.mark.parametrize(
    "line", [b"BDAT abc\r\n", b"BDAT 5 LAST" + b" " * 600 + b"\r\n"]
)
def test_unusable_bdat_is_answered_then_closed_with_421(line):
    peer = ready()
    got = peer.send(MAIL + b"RCPT TO:<b@example.org>\r\n" + line + b"NOOP\r\n")
    assert codes(got[2:])[1:] == ["421 4.5.0"]
    assert codes(got[2:])[0] in ("501 5.5.4", "500 5.5.2")
    assert peer.closed


def test_unusable_bdat_before_tls_is_also_closed_with_421():
    peer = ready(require_tls=True)
    got = peer.send(b"BDAT x\r\n")
    assert got == [str(replies.BDAT_SYNTAX), str(replies.BDAT_UNSYNCED)]


@pytest.mark.parametrize(
    "name",
    [
        "évil.example".encode(),
        b"bad\x01name.example",
        b"bad\x7f.example",
        b"a\tb.example",
        b"mail(x).example",
        b"a@b.example",
        b"[not-an-ip]",
        b"x\xff.example",
    ],
)
@pytest.mark.parametrize("verb", ["EHLO", "HELO"])
def test_implausible_helo_argument_is_refused(verb, name):
    peer = Peer()
    got = peer.send(verb.encode() + b" " + name + b"\r\n")
    assert got == [str(replies.HELO_BAD_NAME.format(verb=verb))]
    assert codes(got) == ["501 5.5.2"]
    assert peer.conn.helo is None


@pytest.mark.parametrize(
    "name",
    [
        "mail.example.com",
        "mail_01.example.com",
        "mail.example.com.",
        "localhost",
        "DESKTOP-AB12CD",
        "192.0.2.7",
        "[192.0.2.7]",
        "[IPv6:2001:db8::7]",
    ],
)
def test_common_helo_arguments_are_accepted(name):
    peer = Peer()
    got = peer.send(f"EHLO {name}\r\n".encode())
    assert codes(got)[0].startswith("250")
    assert peer.conn.helo == name
