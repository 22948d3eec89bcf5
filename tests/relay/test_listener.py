"""SMTP dialogues with a real node over loopback TLS sockets.

One node serves the tests in this module: 127.0.0.1 is listed, 127.0.0.2 has
a pending request, 127.0.0.3 is unknown. Tests that need another
configuration start their own node.
"""

from __future__ import annotations

import re
import ssl

import pytest

from support.node import Node, SmtpWire, wait_for
from tlsrelay.relay.spool import Spool
from tlsrelay.smtp import replies

LISTED, PENDING, UNKNOWN = "127.0.0.1", "127.0.0.2", "127.0.0.3"
MESSAGE = b"From: a@example.com\r\nSubject: test\r\n\r\nline one\r\n.dot line\r\n"


def reply_line(reply: replies.Reply) -> str:
    return f"{reply.status} {reply.text}"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    node = Node.create(tmp_path_factory.mktemp("listener"))
    node.start("--without", "delivery")
    node.publish(allowed=[LISTED], pending=[PENDING])
    yield node
    node.stop()


def queue_id_of(lines: list[str]) -> str:
    match = re.fullmatch(r"2\.0\.0 Ok: queued as ([0-9A-Z]{16})", lines[-1])
    assert match, lines
    return match.group(1)


def test_starttls_then_a_message_is_queued_with_its_id(node):
    with node.connect() as smtp:
        smtp.expect(220)
        _, ehlo = smtp.command("EHLO client.example", 250)
        assert "STARTTLS" in ehlo
        _, lines = smtp.command("MAIL FROM:<a@example.com>", 530)
        assert lines == [reply_line(replies.NOT_TLS)]

        smtp.starttls(node.client_context())
        _, ehlo = smtp.command("EHLO client.example", 250)
        assert "STARTTLS" not in ehlo
        code, lines = smtp.send_message("a@example.com", ["b@example.net"], MESSAGE)
        assert code == 250
        assert queue_id_of(lines) in node.queued()
        smtp.command("QUIT", 221)


def test_second_starttls_is_refused(node):
    with node.open_session() as smtp:
        _, lines = smtp.command("STARTTLS", 503)
        assert lines[0].startswith("5.5.1")


def test_implicit_tls_port_greets_inside_tls(node):
    with node.connect_tls() as smtp:
        assert isinstance(smtp.sock, ssl.SSLSocket)
        smtp.expect(220)
        _, ehlo = smtp.command("EHLO client.example", 250)
        assert "STARTTLS" not in ehlo
        code, lines = smtp.send_message("a@example.com", ["b@example.net"], MESSAGE)
        assert code == 250, lines


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_1_1_is_refused_on_both_ports(node):
    ctx = node.client_context(maximum_version=ssl.TLSVersion.TLSv1_1)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        node.connect_tls(ctx).close()
    with node.connect() as smtp:
        smtp.expect(220)
        smtp.command("EHLO client.example", 250)
        with pytest.raises(ssl.SSLError):
            smtp.starttls(ctx)


def test_tls_1_2_gets_an_ecdhe_aead_cipher(node):
    ctx = node.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
    with node.connect_tls(ctx) as smtp:
        assert isinstance(smtp.sock, ssl.SSLSocket)
        name, version, _ = smtp.sock.cipher()
        assert version == "TLSv1.2"
        assert name.startswith("ECDHE-") and ("GCM" in name or "CHACHA" in name)
        smtp.expect(220)


def test_plaintext_pipelined_after_starttls_is_discarded(node):
    # Case 06: STARTTLS, MAIL and RCPT in one segment; the two commands must
    # never run inside the TLS session.
    before = set(node.queued())
    with node.connect() as smtp:
        smtp.expect(220)
        smtp.command("EHLO client.example", 250)
        smtp.send(
            b"STARTTLS\r\nMAIL FROM:<attacker@example.com>\r\n"
            b"RCPT TO:<victim@example.org>\r\n"
        )
        smtp.expect(220)
        smtp.wrap(node.client_context())
        _, ehlo = smtp.command("EHLO client.example", 250)
        assert "STARTTLS" not in ehlo
        _, lines = smtp.command("DATA", 503)
        assert lines[0].startswith("5.5.1")
    assert set(node.queued()) == before


@pytest.mark.parametrize(
    "source, reply",
    [(PENDING, replies.ACCESS_PENDING), (UNKNOWN, replies.ACCESS_DENIED)],
)
def test_access_decision_at_mail_and_again_at_rcpt(node, source, reply):
    before = set(node.queued())
    with node.open_session(source=source) as smtp:
        _, lines = smtp.command("MAIL FROM:<a@example.com>", reply.code)
        assert lines == [reply_line(reply)]
        _, lines = smtp.command("RCPT TO:<b@example.net>", reply.code)
        assert lines == [reply_line(reply)]
        smtp.command("RSET", 250)
        smtp.command("QUIT", 221)
    assert set(node.queued()) == before


def test_unknown_peer_is_told_how_to_get_enabled(node):
    assert "request" in replies.ACCESS_DENIED.text.lower()


def test_received_header_is_the_only_change(node):
    with node.open_session(helo="mail.customer.example") as smtp:
        code, lines = smtp.send_message("a@example.com", ["bob@example.org"], MESSAGE)
        assert code == 250
        version = smtp.sock.version()
        cipher = smtp.sock.cipher()[0]
    queue_id = queue_id_of(lines)
    spool = Spool(node.spool_path)
    envelope, _, _ = spool.read_envelope(queue_id)
    content = spool.read_content(queue_id)

    header, rest = content.split(b"\r\n", 1)[0], content
    head_end = rest.index(b"\r\nFrom: ") + 2
    assert rest[head_end:] == MESSAGE
    received = rest[:head_end].decode()
    assert header.startswith(b"Received: from mail.customer.example ([127.0.0.1])")
    unfolded = " ".join(received.split())
    assert f"(using {version} with cipher {cipher}" in unfolded
    assert f"by {node.hostname} (tlsrelay) with ESMTPS id {queue_id}" in unfolded
    assert "for <bob@example.org>;" in unfolded
    assert received.count("\r\n") == received.count("\r\n\t") + 1

    assert envelope.client_ip == "127.0.0.1"
    assert envelope.client_helo == "mail.customer.example"
    assert envelope.tls == f"{version} {cipher}"
    assert envelope.location == "LON"


def test_dsn_parameters_reach_the_spool(node):
    with node.open_session() as smtp:
        smtp.command("MAIL FROM:<a@example.com> RET=HDRS ENVID=abc123", 250)
        smtp.command("RCPT TO:<b@example.net> NOTIFY=FAILURE,DELAY", 250)
        smtp.command("RCPT TO:<c@example.net> ORCPT=rfc822;c@example.net", 250)
        smtp.command("DATA", 354)
        smtp.send(MESSAGE.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        code, lines = smtp.read_reply()
        assert code == 250
    envelope, _, _ = Spool(node.spool_path).read_envelope(queue_id_of(lines))
    assert (envelope.ret, envelope.envid) == ("HDRS", "abc123")
    assert envelope.recipients[0].notify == "FAILURE,DELAY"
    assert envelope.recipients[1].orcpt == "rfc822;c@example.net"


def test_bare_postmaster_goes_to_the_provider_postmaster(node):
    # RFC 5321 4.5.1: <postmaster> without a domain must be accepted; the
    # relay has no mailboxes, so it goes to [delivery] postmaster, else to
    # postmaster of the provider's domain (the node's own name has no MX).
    with node.open_session() as smtp:
        smtp.command("MAIL FROM:<a@example.com>", 250)
        smtp.command("RCPT TO:<Postmaster>", 250)
        smtp.command("DATA", 354)
        smtp.send(MESSAGE.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        code, lines = smtp.read_reply()
        assert code == 250
    envelope, _, _ = Spool(node.spool_path).read_envelope(queue_id_of(lines))
    assert [r.address for r in envelope.recipients] == ["postmaster@relay.example"]


def test_bdat_message_is_queued(node):
    with node.open_session() as smtp:
        smtp.command("MAIL FROM:<a@example.com>", 250)
        smtp.command("RCPT TO:<b@example.net>", 250)
        smtp.send(b"BDAT %d LAST\r\n" % len(MESSAGE) + MESSAGE)
        code, lines = smtp.read_reply()
        assert code == 250, lines
    content = Spool(node.spool_path).read_content(queue_id_of(lines))
    assert content.endswith(MESSAGE)


def test_proxy_header_from_a_peer_not_configured_as_proxy_closes(node):
    with SmtpWire.connect("127.0.0.1", node.submission_port) as smtp:
        smtp.send(b"PROXY TCP4 198.51.100.10 192.0.2.25 56324 587\r\n")
        code, _ = smtp.read_reply()
        # The greeting may have left before the header arrived; then EOF.
        if code == 220:
            code, _ = smtp.read_reply()
        assert code == 0


def test_mail_log_has_one_line_per_event_with_queue_id_first(node):
    with node.open_session(source=LISTED) as smtp:
        code, lines = smtp.send_message("a@example.com", ["b@example.net"], MESSAGE)
        smtp.command("QUIT", 221)
    queue_id = queue_id_of(lines)
    line = wait_for(
        lambda: next(
            (x for x in node.log_text().splitlines() if f"{queue_id}: accept" in x), ""
        ),
        5,
        "the accept line",
    )
    fields = line.split("tlsrelay.mail[", 1)[1].split(" INFO ", 1)[1]
    assert re.fullmatch(
        rf"{queue_id}: accept session=\S+ client=127\.0\.0\.1 helo=client\.example "
        r"sender=<a@example\.com> nrcpt=1 size=\d+ tls=TLSv1\.3",
        fields,
    )
    session = re.search(r"session=(\S+)", fields).group(1)
    wait_for(
        lambda: f"NOQUEUE: disconnect session={session} " in node.log_text(),
        5,
        "the disconnect line",
    )
    log = node.log_text()
    assert f"NOQUEUE: connect session={session} client=127.0.0.1 " in log
    assert f"NOQUEUE: tls session={session} client=127.0.0.1 version=TLSv1.3" in log
