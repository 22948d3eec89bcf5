"""Listener behaviour that needs its own node: snapshots, PROXY, spool, time."""

from __future__ import annotations

import contextlib
import subprocess
import time

import pytest

from support.node import Node, SmtpWire, wait_for
from tlsrelay.relay import spool
from tlsrelay.smtp import replies

MESSAGE = b"Subject: test\r\n\r\nhello\r\n"


def reply_line(reply: replies.Reply) -> str:
    return f"{reply.status} {reply.text}"


def mail_reply(node: Node, source: str = "") -> tuple[int, list[str]]:
    with node.open_session(source=source) as smtp:
        return smtp.command("MAIL FROM:<a@example.com>")


def test_no_snapshot_then_list_changes_reach_new_sessions_within_a_second(tmp_path):
    with Node.create(tmp_path) as node:
        node.start("--without", "delivery")
        assert mail_reply(node) == (451, [reply_line(replies.NO_SNAPSHOT)])

        for allowed, pending, code in (
            ([], [], 554),
            ([], ["127.0.0.1"], 450),
            (["127.0.0.0/8"], ["127.0.0.1"], 250),
            (["10.0.0.0/8"], [], 554),
        ):
            node.publish(allowed=allowed, pending=pending)
            published = time.monotonic()
            wait_for(lambda c=code: mail_reply(node)[0] == c, 1.0, f"{code} at MAIL")
            assert time.monotonic() - published < 1.0


def test_proxy_protocol_only_from_configured_proxies(tmp_path):
    proxy, other = "127.0.0.2", "127.0.0.1"
    node = Node.create(tmp_path, overrides={"listen": {"proxy_from": [proxy]}})
    with node:
        node.start("--without", "delivery")
        node.publish(allowed=["198.51.100.10", other])

        def via_proxy(header: bytes) -> tuple[int, list[str]]:
            with SmtpWire.connect("127.0.0.1", node.submission_port, proxy) as smtp:
                smtp.send(header)
                smtp.expect(220)
                smtp.command("EHLO client.example", 250)
                smtp.starttls(node.client_context())
                smtp.command("EHLO client.example", 250)
                return smtp.command("MAIL FROM:<a@example.com>")

        # The proxy's client is judged, not the proxy (case 12).
        listed = b"PROXY TCP4 198.51.100.10 192.0.2.25 56324 587\r\n"
        assert via_proxy(listed)[0] == 250
        unlisted = b"PROXY TCP4 203.0.113.66 192.0.2.25 56324 587\r\n"
        assert via_proxy(unlisted) == (554, [reply_line(replies.ACCESS_DENIED)])

        # A configured proxy that sends no valid header gets nothing.
        with SmtpWire.connect("127.0.0.1", node.submission_port, proxy) as smtp:
            smtp.send(b"EHLO client.example\r\n")
            assert smtp.read_reply() == (0, [])

        # A header from a peer that is not a configured proxy: closed, although
        # the address it names and the peer itself are both listed.
        with SmtpWire.connect("127.0.0.1", node.submission_port, other) as smtp:
            smtp.expect(220)
            smtp.send(listed + b"EHLO client.example\r\n")
            assert smtp.read_reply() == (0, [])
        assert "reason=proxy-header-not-allowed" in node.log_text()
        assert mail_reply(node, other)[0] == 250


@contextlib.contextmanager
def tmpfs(path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False)


def test_full_disk_answers_452_and_leaves_nothing(tmp_path):
    # The spool is a 1 MiB tmpfs; the listener refuses when a declared SIZE
    # does not fit beside min_free_bytes, and when a write runs out of space.
    node = Node.create(tmp_path, overrides={"spool": {"min_free_bytes": 256 * 1024}})
    with tmpfs(node.spool_path, "1m"), node:
        node.start("--without", "delivery")
        node.publish(allowed=["127.0.0.1"])
        big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 2000

        with node.open_session() as smtp:
            # A declared SIZE that cannot fit is refused at MAIL, as Postfix
            # does with queue_minfree, before recipients and data are sent.
            _, lines = smtp.command(f"MAIL FROM:<a@example.com> SIZE={len(big)}", 452)
            assert lines == [reply_line(replies.SPOOL_FULL)]
            smtp.command("RCPT TO:<b@example.net>", 452)  # the refusal repeats

            # Without SIZE the write itself fails (ENOSPC) at the real end.
            smtp.command("MAIL FROM:<a@example.com>", 250)
            smtp.command("RCPT TO:<b@example.net>", 250)
            smtp.command("DATA", 354)
            smtp.send(big + b".\r\n")
            assert smtp.read_reply() == (452, [reply_line(replies.SPOOL_FULL)])
            assert node.queued() == [] and node.leftovers() == []

            # The session goes on, and a message that fits is taken.
            code, lines = smtp.send_message("a@example.com", ["b@example.net"], MESSAGE)
            assert code == 250, lines
            assert len(node.queued()) == 1 and node.leftovers() == []


def test_idle_session_times_out_with_421(tmp_path):
    node = Node.create(tmp_path, overrides={"limits": {"command_timeout_s": 0.3}})
    with node:
        node.start("--without", "delivery")
        with node.open_session() as smtp:
            started = time.monotonic()
            assert smtp.read_reply() == (421, [reply_line(replies.TIMEOUT)])
            assert 0.25 < time.monotonic() - started < 5
        with node.connect() as smtp:
            smtp.expect(220)
            assert smtp.read_reply() == (421, [reply_line(replies.TIMEOUT)])
        # A peer that never starts its handshake is closed without a word.
        with SmtpWire.connect("127.0.0.1", node.smtps_port) as raw:
            assert raw.sock.recv(100) == b""
        assert "reason=timeout" in node.log_text()
        assert "Traceback" not in node.log_text()


@pytest.mark.parametrize("port", ["submission", "smtps"])
def test_peer_closing_mid_message_leaves_nothing(tmp_path, port):
    with Node.create(tmp_path) as node:
        node.start("--without", "delivery")
        node.publish(allowed=["127.0.0.1"])
        if port == "smtps":
            smtp = node.connect_tls()
            smtp.expect(220)
            smtp.command("EHLO client.example", 250)
        else:
            smtp = node.open_session()
        with smtp:
            smtp.command("MAIL FROM:<a@example.com>", 250)
            smtp.command("RCPT TO:<b@example.net>", 250)
            smtp.command("DATA", 354)
            # Past the spool's memory limit, so the message has its tmp/ file.
            line = b"x" * 998 + b"\r\n"
            smtp.send(b"Subject: cut\r\n\r\n" + line * (spool.MEMORY_LIMIT // 900))
            wait_for(node.leftovers, 5, "the reception to reach its file")
        wait_for(lambda: not node.leftovers(), 5, "tmp/ to be cleaned")
        assert node.queued() == []


def test_client_talking_before_a_delayed_greeting_is_refused(tmp_path):
    # Case 16: with greeting_delay_s set, bytes before the 220 mark a bot.
    node = Node.create(tmp_path, overrides={"limits": {"greeting_delay_s": 0.5}})
    with node:
        node.start("--without", "delivery")
        with node.connect() as smtp:
            smtp.send(b"EHLO early.example\r\n")
            assert smtp.read_reply() == (554, [reply_line(replies.EARLY_TALKER)])
            assert smtp.read_reply() == (0, [])
        with node.connect() as smtp:
            smtp.expect(220)
            smtp.command("EHLO patient.example", 250)
