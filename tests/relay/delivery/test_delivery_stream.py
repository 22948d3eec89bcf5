"""Large messages stream from the spool: memory stays flat, bytes stay exact."""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
import tracemalloc

import trustme
from delivery_helpers import delivery_status

from tlsrelay.relay.delivery import content as content_mod
from tlsrelay.smtp import client


class HashingSink:
    """A one-session SMTP server in a thread, with STARTTLS, that keeps only
    a SHA-256 of the DATA bytes it reads (4 KiB at a time, so it is slower
    than the sender and the sender's transport has to wait for it)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        ca = trustme.CA()
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("mx.example.org").configure_cert(self.tls)
        self.digest = hashlib.sha256()
        self.octets = 0
        self.tls_used = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self.listener.accept()
            conn.settimeout(30)
            self._session(conn)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.listener.close()

    def _session(self, conn: socket.socket) -> None:
        conn.sendall(b"220 mx.example.org ESMTP\r\n")
        buffer = b""
        while True:
            while b"\r\n" not in buffer:
                data = conn.recv(4096)
                if not data:
                    return
                buffer += data
            line, _, buffer = buffer.partition(b"\r\n")
            verb = line[:4].upper()
            if verb == b"EHLO":
                extra = b"" if self.tls_used else b"250-STARTTLS\r\n"
                tail = b"250-PIPELINING\r\n250 8BITMIME\r\n"
                conn.sendall(b"250-mx\r\n" + extra + tail)
            elif verb == b"STAR":
                conn.sendall(b"220 2.0.0 go\r\n")
                conn = self.tls.wrap_socket(conn, server_side=True)
                self.tls_used, buffer = True, b""
            elif verb == b"DATA":
                conn.sendall(b"354 go\r\n")
                buffer = self._data(conn, buffer)
                conn.sendall(b"250 2.0.0 hashed\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"250 ok\r\n")

    def _data(self, conn: socket.socket, buffer: bytes) -> bytes:
        tail = b""
        while True:
            if buffer:
                self.digest.update(buffer)
                self.octets += len(buffer)
                tail = (tail + buffer)[-5:]
                buffer = b""
            if tail.endswith(b"\r\n.\r\n") or (self.octets == 3 and tail == b".\r\n"):
                return b""
            buffer = conn.recv(4096)
            if not buffer:
                raise ConnectionError("EOF in DATA")


def big_content(size: int) -> bytes:
    line = b"x" * 70 + b"\r\n"
    dotted = b".leading dot " + b"y" * 57 + b"\r\n"
    body = (line * 9 + dotted) * (size // (len(line) * 10) + 1)
    return b"Subject: big\r\n\r\n" + body[:size]


def test_large_message_streams_with_flat_memory(world):
    content = big_content(8 * 1024 * 1024)  # ends mid-line on purpose
    expected = hashlib.sha256(client.dot_stuff(content)).hexdigest()
    sink = HashingSink()
    world.delivery["routes"] = {"example.org": f"127.0.0.1:{sink.port}"}
    world.queue("b@example.org", content=content)
    del content

    tracemalloc.start()
    try:
        world.rounds()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    sink.thread.join(10)
    assert sink.error is None and sink.tls_used
    assert sink.digest.hexdigest() == expected
    assert world.entries() == []
    # The old whole-buffer path needed the message twice (read + stuffed).
    assert peak < 2 * 1024 * 1024, f"peak {peak} octets for an 8 MiB message"


def test_spooled_content_chunks_and_scan(tmp_path):
    path = tmp_path / "m"
    path.write_bytes(b"HEAD" + b"a\r\n" * 50_000)
    body = content_mod.SpooledContent(path, 4, 150_000)
    chunks = list(body.chunks())
    assert len(chunks) == 3 and b"".join(chunks) == b"a\r\n" * 50_000
    assert b"".join(body.chunks(10)) == b"a\r\na\r\na\r\na"
    assert body.scan() == client.ContentFacts.of(b"a\r\n" * 50_000)
    short = content_mod.SpooledContent(path, 4, 150_001)
    try:
        list(short.chunks())
    except OSError:
        pass
    else:
        raise AssertionError("a short file must raise")


def test_failed_large_message_dsn_returns_it_whole(world, make_mx):
    mx = make_mx(data_reply="554 5.6.0 refused")
    world.delivery["routes"] = {"example.org": mx.address}
    content = big_content(300 * 1024)
    world.queue("b@example.org", content=content)
    world.rounds()
    [(entry, dsn)] = world.dsns()
    assert delivery_status(dsn)[1]["status"] == "5.6.0"
    raw = world.spool.read_content(entry.queue_id)
    start = raw.index(b"Subject: big\r\n")
    assert raw[start : start + len(content)] == content
    assert raw[start + len(content) :].startswith(b"\r\n\r\n--")  # CRLF added
