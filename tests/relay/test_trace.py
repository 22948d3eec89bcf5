"""The Received: trace header (RFC 5321 4.4, RFC 3848 protocol names)."""

from __future__ import annotations

import email
import email.policy

import pytest

from tlsrelay.relay.trace import TraceInfo, clean, protocol, received

NOW = 1796400000.0  # a fixed instant; the text depends on the local zone


def info(**changes) -> TraceInfo:
    base = dict(
        helo="mail.example.com",
        client_ip="198.51.100.10",
        hostname="lon-tls.relay.example",
        esmtp=True,
        tls_version="TLSv1.3",
        tls_cipher="TLS_AES_256_GCM_SHA384",
        tls_bits=256,
    )
    base.update(changes)
    return TraceInfo(**base)


def parsed(header: bytes) -> str:
    msg = email.message_from_bytes(header + b"\r\nbody\r\n", policy=email.policy.SMTP)
    return " ".join(str(msg["Received"]).split())


def test_single_recipient_header_names_everything():
    header = received(info(), "0ABCDEF", ["bob@example.org"], now=NOW)
    assert header.endswith(b"\r\n") and b"\n\t" in header
    text = parsed(header)
    assert text.startswith("from mail.example.com ([198.51.100.10])")
    assert "(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256 bits))" in text
    assert "by lon-tls.relay.example (tlsrelay) with ESMTPS id 0ABCDEF" in text
    assert "for <bob@example.org>;" in text
    date = text.rsplit(";", 1)[1].strip()
    assert email.utils.parsedate_to_datetime(date).timestamp() == NOW


def test_several_recipients_are_not_listed():
    text = parsed(received(info(), "0ABC", ["a@example.org", "b@example.org"], NOW))
    assert " for " not in text
    assert "id 0ABC;" in text


def test_every_line_is_short():
    header = received(info(), "0PGT215PPR0BTA1N", ["x" * 60 + "@example.org"], NOW)
    assert all(len(line) <= 998 for line in header.split(b"\r\n"))
    assert all(len(line) <= 100 for line in header.split(b"\r\n"))


def test_ipv6_client_is_tagged():
    text = parsed(received(info(client_ip="2001:db8::5"), "0A", ["a@b.example"], NOW))
    assert "([IPv6:2001:db8::5])" in text


@pytest.mark.parametrize(
    "helo",
    ["evil\r\nX-Injected: yes", "a (comment) b", "x\nBcc: victim@example.org", ""],
)
def test_peer_words_cannot_break_the_header(helo):
    header = received(info(helo=helo), "0A", [f"{helo}@example.org"], NOW)
    msg = email.message_from_bytes(header + b"\r\nbody\r\n")
    assert msg.keys() == ["Received"]
    assert b"\n" not in header.replace(b"\r\n", b"")
    assert "(" not in clean(helo) and " " not in clean(helo)


@pytest.mark.parametrize(
    "changes, name",
    [
        ({}, "ESMTPS"),
        ({"tls_version": ""}, "ESMTP"),
        ({"esmtp": False, "tls_version": ""}, "SMTP"),
        ({"smtputf8": True}, "UTF8SMTPS"),
        ({"smtputf8": True, "tls_version": ""}, "UTF8SMTP"),
    ],
)
def test_protocol_names(changes, name):
    assert protocol(info(**changes)) == name


@pytest.mark.parametrize(
    "word",
    ["évil.example", "x\x00y", "a\x7fb", "a\x1bb", "\udcff.example", "δ@example.org"],
)
def test_peer_words_become_printable_ascii(word):
    # QA: "EHLO évil.example" reached the header raw; defence in depth.
    header = received(info(helo=word), "0A", [word], NOW)
    assert header.isascii()
    assert all(32 <= octet < 127 or octet in b"\r\n\t" for octet in header)
    assert "?" in clean(word)
