"""Faults found by QA (H9) in `tlsrelay probe`, each pinned by a test.

- `tlsrelay probe HOST:465` without --smtps waited the whole timeout and
  said only "connection failed: timed out", though the TCP connection was
  up: an implicit-TLS port says nothing until the client's TLS hello.  Now
  the error names the likely cause and --smtps.
- `--smtps` against a STARTTLS port said only "wrong version number"; now
  it says the server spoke plaintext.
"""

from __future__ import annotations

import socket
import threading

from tlsrelay.client import probe as probing

MX = "mx.example.org"


def one_connection(behave) -> tuple[int, threading.Thread, socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        with conn:
            behave(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread, listener


def test_silent_port_without_smtps_suggests_smtps():
    # Like an smtps listener: reads the client's first bytes, says nothing.
    port, thread, listener = one_connection(lambda conn: conn.recv(100))
    opts = probing.ProbeOptions(helo="client.example", timeout_s=0.3)
    result = probing.probe(MX, "127.0.0.1", port, opts)
    listener.close()
    thread.join(5)
    assert "no greeting within 0.3 s" in result.error
    assert "--smtps" in result.error


def test_smtps_against_a_plaintext_greeting_says_so():
    def greet(conn):
        conn.sendall(b"220 mx.example.org ESMTP\r\n")
        conn.recv(100)

    port, thread, listener = one_connection(greet)
    opts = probing.ProbeOptions(smtps=True, helo="client.example", timeout_s=5)
    result = probing.probe(MX, "127.0.0.1", port, opts)
    listener.close()
    thread.join(5)
    assert result.error_code == "tls-handshake-failed"
    assert "spoke plaintext" in result.error
