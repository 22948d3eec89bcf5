"""Delivery end to end: spool -> scheduler -> real sockets -> test MX (+ DNS)."""

from __future__ import annotations

import hashlib
import logging

import pytest
from delivery_helpers import CONTENT, delivery_status

from tlsrelay.relay import spool as spool_mod
from tlsrelay.relay.delivery import policy
from tlsrelay.smtp import client


def point_mx(world, mx, domain="example.org", *extra_mx):
    """DNS: DOMAIN's MX is mx.DOMAIN at 127.0.0.1; MX port = the test MX's."""
    world.dns.add(domain, "MX", f"10 mx.{domain}.", *extra_mx)
    world.dns.add(f"mx.{domain}", "A", "127.0.0.1")
    world.smtp_port = mx.port


def test_mx_lookup_delivers_over_tls_and_logs(world, make_mx, caplog):
    mx = make_mx()
    point_mx(world, mx)
    qid = world.queue("b@example.org")
    with caplog.at_level(logging.INFO, logger="tlsrelay.mail"):
        world.rounds()
    [msg] = mx.messages
    assert msg.tls in ("TLSv1.2", "TLSv1.3")
    assert msg.content == CONTENT and msg.rcpts == [("b@example.org", [])]
    assert world.entries() == []
    lines = [r.getMessage() for r in caplog.records if r.name == "tlsrelay.mail"]
    sent = next(line for line in lines if "to=<b@example.org>" in line)
    assert sent.startswith(
        f"{qid}: to=<b@example.org> relay=mx.example.org[127.0.0.1]:"
    )
    assert f"tls={msg.tls}/" in sent and "dsn=2.0.0 status=sent (250 2.0.0" in sent
    assert f"{qid}: removed" in lines


def test_mx_preference_order_falls_back_to_next_host(world, make_mx):
    mx = make_mx()
    point_mx(world, mx, "example.org", "5 dead.example.org.")
    world.dns.add("dead.example.org", "A", "127.0.0.3")  # nothing listens there
    world.queue("b@example.org")
    world.rounds()
    assert len(mx.messages) == 1 and world.entries() == []
    asked = [q for q in world.dns.queries if q[1] == "A"]
    assert asked.index(("dead.example.org.", "A")) < asked.index(
        ("mx.example.org.", "A")
    )


def test_no_mx_falls_back_to_address_records(world, make_mx):
    mx = make_mx()
    world.dns.add("example.org", "A", "127.0.0.1")
    world.smtp_port = mx.port
    world.queue("b@example.org")
    world.rounds()
    assert len(mx.messages) == 1


def test_null_mx_fails_at_once_with_dsn(world, make_mx):
    mx = make_mx()
    world.dns.add("nomail.example", "MX", "0 .")
    world.smtp_port = mx.port
    world.queue("b@nomail.example")
    world.rounds()
    assert mx.sessions == []
    [(entry, dsn)] = world.dsns()
    assert entry.envelope.sender == "" and entry.envelope.recipients[0].address == (
        "a@example.com"
    )
    rcpt = delivery_status(dsn)[1]
    assert rcpt["status"] == "5.1.10" and rcpt["action"] == "failed"


def test_route_overrides_mx(world, make_mx):
    mx = make_mx()
    world.dns.add("example.net", "MX", "10 elsewhere.example.")
    world.delivery["routes"] = {"example.net": mx.address}
    world.queue("b@example.net")
    world.rounds()
    assert len(mx.messages) == 1
    assert ("example.net.", "MX") not in world.dns.queries


def test_4xx_defers_with_backoff_then_delivers(world, make_mx):
    mx = make_mx(rcpt={"b@example.org": ["450 4.2.0 Mailbox busy", "250 2.1.5 Ok"]})
    point_mx(world, mx)
    world.delivery.update(minimal_backoff_s=300, maximal_backoff_s=4000)
    qid = world.queue("b@example.org")
    world.rounds()
    [entry] = world.entries()
    assert entry.state.attempts == 1
    assert entry.state.next_attempt == world.clock.now + 300
    assert entry.state.recipients[0].status == spool_mod.DEFERRED
    assert entry.state.recipients[0].last_error == "450 4.2.0 Mailbox busy"
    assert entry.queue_name == "deferred"

    world.clock.now += 299
    world.rounds()
    assert len(mx.sessions) == 1  # not due yet: no new session

    world.clock.now += 1
    world.rounds()
    assert [m.rcpts for m in mx.messages] == [[("b@example.org", [])]]
    assert world.entries() == [] and world.dsns() == []
    assert qid not in world.spool.ids()


def test_5xx_returns_rfc3464_dsn_and_the_dsn_itself_never_bounces(world, make_mx):
    mx = make_mx(rcpt={"nobody@example.org": "550 5.1.1 No such user"})
    point_mx(world, mx)
    nobody = spool_mod.Recipient(
        "nobody@example.org", orcpt="rfc822;nobody+40example.org"
    )
    qid = world.queue(nobody, "b@example.org", ret="HDRS", envid="ENV1")
    world.rounds()
    assert [m.rcpts for m in mx.messages] == [[("b@example.org", [])]]
    [(entry, dsn)] = world.dsns()
    assert entry.envelope.sender == ""
    assert [r.address for r in entry.envelope.recipients] == ["a@example.com"]
    assert dsn["To"].addresses[0].addr_spec == "a@example.com"
    per_message, rcpt = delivery_status(dsn)
    assert per_message["reporting-mta"] == "dns; relay.example.net"
    assert per_message["original-envelope-id"] == "ENV1"
    assert "arrival-date" in per_message
    assert rcpt["final-recipient"] == "rfc822; nobody@example.org"
    assert rcpt["original-recipient"] == "rfc822; nobody@example.org"
    assert rcpt["action"] == "failed" and rcpt["status"] == "5.1.1"
    assert rcpt["remote-mta"] == "dns; mx.example.org"
    assert rcpt["diagnostic-code"] == "smtp; 550 5.1.1 No such user"
    types = [p.get_content_type() for p in dsn.walk()]
    assert "text/rfc822-headers" in types  # RET=HDRS
    assert qid not in world.spool.ids()

    # The DSN goes to example.com, which has no DNS: it fails, and is dropped.
    world.rounds()
    assert world.entries() == []


def test_null_sender_failure_is_logged_and_removed(world, make_mx, caplog):
    # case 24: a bounce never bounces.
    mx = make_mx(rcpt={"nobody@example.org": "550 5.1.1 No such user"})
    point_mx(world, mx)
    qid = world.queue("nobody@example.org", sender="")
    with caplog.at_level(logging.INFO, logger="tlsrelay.mail"):
        world.rounds()
    assert "MAIL FROM:<>" in mx.sessions[0].commands
    assert world.entries() == []
    text = caplog.text
    assert f"{qid}: to=<nobody@example.org>" in text and "status=bounced" in text
    assert f"{qid}: no non-delivery notification" in text


def test_notify_never_means_no_dsn(world, make_mx):
    mx = make_mx(rcpt={"b@example.org": "550 5.1.1 No"})
    point_mx(world, mx)
    world.queue(spool_mod.Recipient("b@example.org", notify="NEVER"))
    world.rounds()
    assert world.entries() == []


def test_queue_lifetime_expiry_returns_the_message(world, make_mx):
    mx = make_mx(rcpt={"b@example.org": "451 4.3.0 Try later"})
    point_mx(world, mx)
    world.delivery["queue_lifetime_s"] = 3600
    world.queue("b@example.org")
    world.rounds()
    assert world.entries()[0].state.recipients[0].status == spool_mod.DEFERRED
    world.clock.now += 3600
    world.rounds()
    [(entry, dsn)] = world.dsns()
    rcpt = delivery_status(dsn)[1]
    assert rcpt["action"] == "failed" and rcpt["status"] == "4.3.0"
    assert rcpt["diagnostic-code"] == "smtp; 451 4.3.0 Try later"
    assert len(world.entries()) == 1  # only the DSN is left


def test_connection_reuse_and_pipelining(world, make_mx):
    # batch_replies: the MX answers MAIL/RCPT only once DATA came, so a
    # client that waited for each reply would stall and time out.
    mx = make_mx(batch_replies=True)
    point_mx(world, mx)
    world.delivery["concurrency_per_destination"] = 1
    world.queue("b@example.org", "c@example.org")
    world.queue("d@example.org")
    world.rounds()
    assert len(mx.sessions) == 1
    assert [len(m.rcpts) for m in mx.messages] == [2, 1]
    commands = mx.sessions[0].commands
    assert commands.count("EHLO relay.example.net") == 2  # plaintext, then TLS
    assert commands[-1] == "QUIT"


def test_site_failure_defers_every_recipient(world):
    world.dns.add("example.org", "A", "127.0.0.3")  # nothing listens there
    world.smtp_port = 9  # discard port on a loopback address without listener
    world.queue("b@example.org", "c@example.org")
    world.rounds()
    [entry] = world.entries()
    assert {rs.status for rs in entry.state.recipients} == {spool_mod.DEFERRED}
    assert entry.state.last_error.startswith("421 4.4.1 Connection failed")


def test_tls_required_but_not_offered_stays_queued(world, make_mx):
    # case 20, outbound: never plaintext under a TLS-required policy.
    mx = make_mx(starttls=False)
    point_mx(world, mx)
    world.tls_policy = lambda domain, routed: policy.TlsDecision(
        client.TlsLevel.ENCRYPT, "test"
    )
    world.queue("b@example.org")
    world.rounds()
    assert not any(c.startswith("MAIL") for c in mx.sessions[0].commands)
    [entry] = world.entries()
    assert entry.state.recipients[0].last_error.startswith("450 4.7.4")


@pytest.mark.parametrize(
    "options, error",
    [
        ({"starttls_reply": "454 4.7.0 TLS not available"}, "421 4.7.0"),
        ({"break_handshake": True}, "421 4.7.5"),
    ],
)
def test_failed_starttls_never_falls_back_to_plaintext(world, make_mx, options, error):
    mx = make_mx(**options)
    point_mx(world, mx)
    world.queue("b@example.org")
    world.rounds()
    assert mx.messages == []
    assert not any(c.startswith("MAIL") for s in mx.sessions for c in s.commands)
    [entry] = world.entries()
    assert entry.state.recipients[0].status == spool_mod.DEFERRED
    assert entry.state.recipients[0].last_error.startswith(error)


def test_case16_multiline_greeting_then_helo_fallback(world, make_mx):
    greeting = ("220-mx.example.org first line", "220 mx.example.org ESMTP")
    mx = make_mx(greeting=greeting, ehlo_reply="502 5.5.1 No EHLO here")
    point_mx(world, mx)
    world.queue("b@example.org")
    world.rounds()
    [msg] = mx.messages
    assert mx.sessions[0].commands[:2] == [
        "EHLO relay.example.net",
        "HELO relay.example.net",
    ]
    assert msg.tls == ""  # HELO: no STARTTLS keyword, plaintext is `may`


# -- the cases ---------------------------------------------------------------


def test_case03_04_outbound_bytes_are_crlf_and_exactly_stuffed(world, make_mx):
    mx = make_mx()
    point_mx(world, mx)
    content = (
        b"Subject: dots\r\n\r\n.\r\n..leading\r\nx\r\n"
        b"text\r\n.\r\nMAIL FROM:<x@example.com>\r\n.\r\n"
    )
    world.queue("b@example.org", content=content)
    world.rounds()
    [msg] = mx.messages
    assert msg.raw_data == (
        b"Subject: dots\r\n\r\n..\r\n...leading\r\nx\r\n"
        b"text\r\n..\r\nMAIL FROM:<x@example.com>\r\n..\r\n.\r\n"
    )
    assert msg.content == content
    received = bytes(mx.sessions[0].received)
    assert received.count(b"\n") == received.count(b"\r\n")
    assert received.count(b"\r") == received.count(b"\r\n")


def test_case03_bare_lf_in_spool_never_goes_out(world, make_mx):
    mx = make_mx()
    point_mx(world, mx)
    world.queue("b@example.org", content=b"Subject: x\r\n\r\na\n.\nMAIL FROM:<x>\r\n")
    world.rounds()
    assert not any(c.startswith("MAIL") for c in mx.sessions[0].commands)
    [(_, dsn)] = world.dsns()
    assert delivery_status(dsn)[1]["status"] == "5.6.0"


def test_case07_plaintext_after_starttls_is_discarded(world, make_mx):
    # The injected capabilities lack 8BITMIME; the real (TLS) ones have it.
    mx = make_mx(inject_after_starttls=b"250-mx.example.org\r\n250 AUTH PLAIN\r\n")
    point_mx(world, mx)
    body = (
        b"Subject: g\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n"
    )
    world.queue("b@example.org", content=body, body="8BITMIME")
    world.rounds()
    [msg] = mx.messages
    assert msg.tls and msg.content == body and "BODY=8BITMIME" in msg.mail_params
    commands = mx.sessions[0].commands
    assert commands[:3] == [
        "EHLO relay.example.net",
        "STARTTLS",
        "EHLO relay.example.net",
    ]


def test_case22_smtputf8_needed_fails_5_6_7_ascii_delivered(world, make_mx):
    mx = make_mx(smtputf8=False)
    point_mx(world, mx)
    utf8 = "\u03b4\u03bf\u03ba\u03b9\u03bc\u03ae@example.org"
    world.queue(utf8, smtputf8=True)
    world.queue("rcpt@example.org", sender="b@example.com", smtputf8=True)
    world.rounds()
    [msg] = mx.messages
    assert msg.mail_from == "b@example.com" and "SMTPUTF8" not in msg.mail_params
    [(entry, dsn)] = world.dsns()
    assert entry.envelope.recipients[0].address == "a@example.com"
    rcpt = delivery_status(dsn)[1]
    assert rcpt["status"] == "5.6.7" and rcpt["action"] == "failed"
    raw = world.spool.read_content(entry.queue_id)
    assert f"Final-Recipient: utf-8; {utf8}\r\n".encode() in raw
    assert entry.envelope.smtputf8  # the report itself carries UTF-8


@pytest.mark.parametrize("eightbit", [True, False])
def test_case23_8bitmime(world, make_mx, eightbit):
    mx = make_mx(eightbitmime=eightbit)
    point_mx(world, mx)
    body = (
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s; bh=x; b=y\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n"
    )
    world.queue("b@example.org", content=body, body="8BITMIME")
    world.rounds()
    if eightbit:
        [msg] = mx.messages
        assert msg.mail_params[:1] == ["BODY=8BITMIME"]
        assert hashlib.sha256(msg.content).digest() == hashlib.sha256(body).digest()
        assert world.dsns() == []
    else:
        assert mx.messages == []
        assert not any(c.startswith("MAIL") for c in mx.sessions[0].commands)
        [(_, dsn)] = world.dsns()
        assert delivery_status(dsn)[1]["status"] == "5.6.3"
