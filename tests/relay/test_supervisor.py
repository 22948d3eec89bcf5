"""`tlsrelay serve` as a process tree: start, reload, restart, stop, crash."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess

import pytest
import trustme

from support.node import HOSTNAME, Node, free_port, pid_gone, wait_for
from tlsrelay.smtp import replies

MESSAGE = b"Subject: test\r\n\r\nhello\r\n"


def test_kill_9_of_serve_takes_its_workers_along(tmp_path):
    with Node.create(tmp_path, workers=2) as node:
        node.start("--without", "delivery")
        children = node.child_pids()
        assert len(children) == 2
        node.proc.kill()
        node.proc.wait()
        wait_for(lambda: all(pid_gone(p) for p in children), 5, "workers to die")
        wait_for(node.ports_free, 5, "the ports to be free")


def test_a_dead_worker_is_started_again(tmp_path):
    with Node.create(tmp_path) as node:
        node.start("--without", "delivery")
        (worker,) = node.child_pids()
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: pid_gone(worker), 5, "the worker to die")
        replacement = wait_for(
            lambda: [p for p in node.child_pids() if p != worker], 5, "a new worker"
        )
        assert replacement
        wait_for(lambda: not node.ports_free(), 10, "the new worker to listen")
        with node.connect() as smtp:
            smtp.expect(220)
        assert f"pid={worker} exited" in node.log_text()


def test_sigterm_closes_idle_sessions_with_421_and_exits_0(tmp_path):
    with Node.create(tmp_path) as node:
        node.start("--without", "delivery")
        children = node.child_pids()
        with node.open_session() as smtp:
            node.signal(signal.SIGTERM)
            assert smtp.read_reply() == (
                421,
                [f"{replies.SHUTTING_DOWN.status} {replies.SHUTTING_DOWN.text}"],
            )
        assert node.proc.wait(30) == 0
        assert all(pid_gone(p) for p in children)
        assert node.ports_free()


def test_sighup_reloads_the_certificate_and_keeps_open_sessions(tmp_path):
    with Node.create(tmp_path) as node:
        node.start("--without", "delivery")
        node.publish(allowed=["127.0.0.1"])
        old_ctx = node.client_context()
        smtp = node.open_session()
        with smtp:
            new_ca = trustme.CA()
            issued = new_ca.issue_cert(HOSTNAME)
            issued.cert_chain_pems[0].write_to_path(node.dir / "cert.pem")
            issued.private_key_pem.write_to_path(node.dir / "key.pem")
            node.signal(signal.SIGHUP)
            wait_for(lambda: "certificate reloaded" in node.log_text(), 5, "the reload")

            # The session opened before the reload goes on.
            code, lines = smtp.send_message("a@example.com", ["b@example.net"], MESSAGE)
            assert code == 250, lines

        # New handshakes present the new certificate.
        new_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        new_ca.configure_trust(new_ctx)
        with node.connect_tls(new_ctx) as fresh:
            fresh.expect(220)
        with pytest.raises(ssl.SSLCertVerificationError):
            node.connect_tls(old_ctx).close()


def test_serve_refuses_to_start_without_a_readable_certificate(tmp_path):
    # Case 20 (b): never listen without being able to offer STARTTLS.
    node = Node.create(tmp_path)
    (node.dir / "cert.pem").unlink()
    result = subprocess.run(
        node.command() + ["serve", "--without", "delivery"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "cert.pem does not exist" in result.stderr
    assert node.ports_free()


def test_serve_refuses_a_port_in_use(tmp_path):
    node = Node.create(tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", node.smtps_port))
        holder.listen()
        result = subprocess.run(
            node.command() + ["serve", "--without", "delivery"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert f"127.0.0.1:{node.smtps_port} (smtps): already in use" in result.stderr


def test_serve_starts_when_the_store_is_unreachable(tmp_path):
    # DESIGN.md: a store outage never stops mail that is already allowed.
    store = {"url": f"postgresql+psycopg://tlsrelay@127.0.0.1:{free_port()}/none"}
    with Node.create(tmp_path, overrides={"store": store}) as node:
        node.start("--without", "delivery")
        assert "starting anyway" in node.log_text()
        node.publish(allowed=["127.0.0.1"])
        with node.open_session() as smtp:
            smtp.command("MAIL FROM:<a@example.com>", 250)
