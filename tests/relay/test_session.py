"""A listener Session with a recording transport: what leaves in which write.

These tests pin down the fix for the TLS 1.3 ticket stall (docs/decisions.md)
and the back-pressure while a message is committed, which real sockets
cannot show deterministically.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl

import pytest
import trustme

from tlsrelay import config
from tlsrelay.relay import access
from tlsrelay.relay import spool as spool_mod
from tlsrelay.relay.listener import SMTPS, SUBMISSION, Listener, Session
from tlsrelay.relay.spool import Spool
from tlsrelay.relay.tlsio import CertificateStore

HOST = "lon-tls.relay.example"


class RecordingTransport:
    def __init__(self, sock: socket.socket | None = None) -> None:
        self.writes: list[bytes] = []
        self.reading = True
        self.closed = False
        self.sock = sock

    def get_extra_info(self, name, default=None):
        extra = {"socket": self.sock, "peername": ("127.0.0.1", 40000)}
        return extra.get(name, default)

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed = True


class TlsClient:
    def __init__(self, ca: trustme.CA) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ca.configure_trust(ctx)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=HOST)

    def step(self) -> bool:
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    def receive(self, data: bytes) -> bytes:
        self.incoming.write(data)
        chunks = []
        while True:
            try:
                chunk = self.obj.read()
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                chunk = b""
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def listener(tmp_path, ca):
    issued = ca.issue_cert(HOST)
    issued.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    issued.private_key_pem.write_to_path(tmp_path / "key.pem")
    settings = config.from_dict(
        {"node": {"hostname": HOST}, "spool": {"min_free_bytes": 0}},
        tmp_path / "tlsrelay.toml",
    )
    path = settings.snapshot_path(settings.node.location)
    access.publish(path, "LON", ["127.0.0.1"], [], 1)
    spool = Spool(settings.spool.path).create()
    certs = CertificateStore(settings.tls.cert, settings.tls.key)
    return Listener(settings, certs, access.AccessList(path), spool)


def handshake_smtps(session: Session, transport, client: TlsClient) -> bytes:
    """Run the handshake; return the plaintext of the write that finished it."""
    assert not client.step()
    session.data_received(client.outgoing.read())
    assert len(transport.writes) == 1
    client.incoming.write(transport.writes[-1])
    assert client.step()
    session.data_received(client.outgoing.read())
    assert len(transport.writes) == 2
    return client.receive(transport.writes[-1])


def test_tickets_and_greeting_leave_in_one_write(listener, ca):
    async def main():
        transport = RecordingTransport()
        session = Session(listener, SMTPS)
        session.connection_made(transport)
        client = TlsClient(ca)
        greeting = handshake_smtps(session, transport, client)
        assert greeting == f"220 {HOST} ESMTP tlsrelay\r\n".encode()
        assert client.obj.version() == "TLSv1.3"
        session.connection_lost(None)

    asyncio.run(main())


def test_accepted_sockets_have_nagle_off(listener):
    async def main():
        with socket.create_server(("127.0.0.1", 0)) as server:
            client = socket.create_connection(server.getsockname())
            accepted, _ = server.accept()
            with client, accepted:
                session = Session(listener, SUBMISSION)
                session.connection_made(RecordingTransport(accepted))
                nodelay = accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                assert nodelay
                session.connection_lost(None)

    asyncio.run(main())


def test_reading_pauses_while_the_message_is_committed(listener, ca):
    async def main():
        transport = RecordingTransport()
        session = Session(listener, SMTPS)
        session.connection_made(transport)
        client = TlsClient(ca)
        handshake_smtps(session, transport, client)

        client.obj.write(
            b"EHLO client.example\r\nMAIL FROM:<a@example.com>\r\n"
            b"RCPT TO:<b@example.net>\r\nDATA\r\n"
        )
        session.data_received(client.outgoing.read())
        replies = client.receive(b"".join(transport.writes[2:]))
        assert replies.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n")
        sent = len(transport.writes)

        client.obj.write(b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        session.data_received(client.outgoing.read())
        # The commit runs in a thread: nothing answered, nothing read yet.
        assert not transport.reading
        assert len(transport.writes) == sent

        for _ in range(500):
            if transport.reading:
                break
            await asyncio.sleep(0.01)
        assert transport.reading
        answers = client.receive(b"".join(transport.writes[sent:]))
        assert answers.startswith(b"250 2.0.0 Ok: queued as ")
        assert answers.endswith(b"221 2.0.0 Bye\r\n")
        assert len(transport.writes) == sent + 1
        assert transport.closed
        assert len(listener.spool.ids()) == 1

    asyncio.run(main())


def test_a_bug_of_ours_answers_421_and_closes(listener, ca, monkeypatch, caplog):
    def broken(ip):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(listener.access, "decide", broken)

    async def main():
        transport = RecordingTransport()
        session = Session(listener, SMTPS)
        session.connection_made(transport)
        client = TlsClient(ca)
        handshake_smtps(session, transport, client)
        client.obj.write(b"EHLO client.example\r\nMAIL FROM:<a@example.com>\r\n")
        session.data_received(client.outgoing.read())
        answers = client.receive(b"".join(transport.writes[2:]))
        assert answers.endswith(b"421 4.3.0 Internal error, closing connection\r\n")
        assert b"simulated" not in answers
        assert transport.closed

    asyncio.run(main())
    assert "simulated bug" in caplog.text


def test_a_failed_group_commit_answers_452_and_the_session_goes_on(
    listener, ca, monkeypatch
):
    def broken(fd):
        raise OSError(errno.EIO, "Input/output error")

    async def send_message(session, transport, client) -> bytes:
        sent = len(transport.writes)
        client.obj.write(
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"
        )
        session.data_received(client.outgoing.read())
        client.obj.write(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        session.data_received(client.outgoing.read())
        for _ in range(500):
            if transport.reading:
                break
            await asyncio.sleep(0.01)
        return client.receive(b"".join(transport.writes[sent:]))

    async def main():
        transport = RecordingTransport()
        session = Session(listener, SMTPS)
        session.connection_made(transport)
        client = TlsClient(ca)
        handshake_smtps(session, transport, client)
        client.obj.write(b"EHLO client.example\r\n")
        session.data_received(client.outgoing.read())
        client.receive(b"".join(transport.writes[2:]))

        monkeypatch.setattr(spool_mod.os, "fdatasync", broken)
        answers = await send_message(session, transport, client)
        assert answers.endswith(b"\r\n452 4.3.1 Insufficient system storage\r\n")
        assert listener.spool.ids() == []
        assert os.listdir(listener.spool.tmp_dir) == []

        monkeypatch.undo()
        answers = await send_message(session, transport, client)
        assert b"\r\n250 2.0.0 Ok: queued as " in answers
        assert len(listener.spool.ids()) == 1
        session.connection_lost(None)

    asyncio.run(main())
