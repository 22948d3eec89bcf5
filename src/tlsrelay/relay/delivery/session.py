"""Outbound SMTP sessions over asyncio: the adapter around smtp.client.

The sans-IO core decides every byte; this module connects, moves bytes,
applies timeouts and performs the TLS handshake when the core asks for it.
TLS is opportunistic here (Postfix's `may`): certificates are not verified,
TLS 1.2 is the minimum, and a failed handshake ends the session (the
delivery is deferred) rather than continuing in plaintext.

STARTTLS boundary (RFC 3207 5, case 07): bytes already read from the socket
when the core has parsed the 220 reply to STARTTLS are plaintext sent before
the handshake; they are dropped here and by the core, never fed into TLS.

Content is streamed (SendContent): chunks come from a callable the caller
gives with the message, and each chunk waits for the transport to drain
below its high-water mark (pause_writing/resume_writing), so a session
holds about one chunk plus the transport's buffer however big the message.

It must never send plaintext on a connection where STARTTLS was attempted
and failed, and never log message content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass

from tlsrelay.smtp import client

log = logging.getLogger(__name__)

# Gives the message content in chunks, each time it is called.
ContentSource = Callable[[], Generator[bytes, None, None]]
CONTENT_UNREADABLE = client.local_reply(451, "4.3.0 Queued content unreadable")


class SessionError(Exception):
    """No usable session: the reply says why, for every recipient waiting."""

    def __init__(self, reply: client.Reply, remote: bool, relay: str) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.remote = remote
        self.relay = relay


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 30.0
    command_s: float = 300.0


def opportunistic_context() -> ssl.SSLContext:
    """TLS for `may`: encrypt, TLS 1.2 or newer, no certificate checks."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _Channel(asyncio.Protocol):
    """Received chunks in a queue; the transport can be swapped for TLS."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._chunks: deque[bytes] = deque()
        self._eof = False
        self._wakeup = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._wakeup.set()

    def eof_received(self) -> bool:
        self._eof = True
        self._wakeup.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wakeup.set()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high mark."""
        if not self.closed:
            await self._writable.wait()

    async def read(self) -> bytes:
        while not self._chunks and not self._eof:
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._chunks.popleft() if self._chunks else b""

    @property
    def closed(self) -> bool:
        return self._eof or self.transport is None or self.transport.is_closing()

    def discard_buffered(self) -> int:
        dropped = sum(len(c) for c in self._chunks)
        self._chunks.clear()
        return dropped

    def write(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def start_tls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.transport = await loop.start_tls(  # type: ignore[assignment]
            self.transport, self, context, server_hostname=server_hostname or None
        )

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Session:
    """One connection to one server address, good for several transactions."""

    def __init__(
        self,
        host: str,
        ip: str,
        port: int,
        config: client.ClientConfig,
        timeouts: Timeouts,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.ip = ip
        self.port = port
        self.relay = f"{host}[{ip}]:{port}"
        self.tls = "none"
        self.conn = client.ClientConnection(config)
        self.timeouts = timeouts
        self._tls_context = tls_context or opportunistic_context()
        self._channel = _Channel()
        self._content: ContentSource | None = None

    @property
    def alive(self) -> bool:
        return self.conn.state is client.State.READY

    async def open(self) -> None:
        """Connect, read the greeting, EHLO, STARTTLS; raise SessionError."""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: self._channel, self.ip, self.port),
                self.timeouts.connect_s,
            )
        except (TimeoutError, OSError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else exc
            reply = client.local_reply(421, f"4.4.1 Connection failed: {reason}")
            raise SessionError(reply, False, self.relay) from None
        event = await self._next()
        if isinstance(event, client.SessionFailed):
            self._channel.close()
            raise SessionError(event.reply, event.remote, self.relay)
        log.info("session %s tls=%s", self.relay, self.tls)

    async def send(
        self, message: client.OutboundMessage, content: ContentSource | None = None
    ) -> tuple[client.RecipientResult, ...]:
        """One transaction; CONTENT streams it when message.content is facts."""
        self._content = content
        self.conn.send_message(message)
        event = await self._next()
        if not isinstance(event, client.TransactionDone):
            raise RuntimeError(f"unexpected {event!r} during a transaction")
        return event.results

    async def close(self) -> None:
        """QUIT politely when the session is usable, then close."""
        if self.alive:
            self.conn.quit()
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(self._next(), 5.0)
        self._channel.close()

    # -- driving the core ----------------------------------------------------

    async def _next(self) -> client.Event:
        """Move bytes until the core has an event for us (StartTLS handled)."""
        while True:
            self._channel.write(self.conn.data_to_send())
            event = self.conn.next_event()
            if isinstance(event, client.StartTLS):
                await self._handshake()
            elif isinstance(event, client.SendContent):
                await self._stream()
            elif event is client.NEED_DATA:
                self.conn.receive_data(await self._read())
            else:
                return event

    async def _read(self) -> bytes:
        try:
            return await asyncio.wait_for(self._channel.read(), self.timeouts.command_s)
        except TimeoutError:
            log.info("timeout after %.0fs from %s", self.timeouts.command_s, self.relay)
            self._channel.close()
            return b""

    async def _stream(self) -> None:
        """Feed the content to the core chunk by chunk, as the peer drains it."""
        if self._content is None:
            raise RuntimeError("streamed message sent without a content source")
        chunks = self._content()
        try:
            for chunk in chunks:
                if self._channel.closed:
                    break
                self.conn.send_content(chunk)
                self._channel.write(self.conn.data_to_send())
                await self._drain()
        except OSError as exc:
            log.error("reading queued content for %s failed: %s", self.relay, exc)
            self.conn.abort_content(CONTENT_UNREADABLE)
            self._channel.close()
            return
        finally:
            chunks.close()
        if self._channel.closed:
            self.conn.receive_data(b"")  # the connection was lost meanwhile
        else:
            self.conn.end_content()

    async def _drain(self) -> None:
        try:
            await asyncio.wait_for(self._channel.drain(), self.timeouts.command_s)
        except TimeoutError:
            log.info("timeout sending content to %s", self.relay)
            self._channel.close()

    async def _handshake(self) -> None:
        # Case 07: anything read so far came after the 220, in plaintext.
        dropped = self._channel.discard_buffered()
        if dropped or self.conn.discarded_after_starttls:
            log.warning(
                "%s sent %d octets after its STARTTLS reply; discarded",
                self.relay,
                dropped + self.conn.discarded_after_starttls,
            )
        if self._channel.closed:
            # start_tls() on a closed transport would wait for ever.
            raise SessionError(client.TLS_HANDSHAKE_FAILED, False, self.relay)
        try:
            await asyncio.wait_for(
                self._channel.start_tls(self._tls_context, self.host),
                self.timeouts.command_s,
            )
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            log.info("TLS handshake with %s failed: %s", self.relay, exc)
            self._channel.close()
            raise SessionError(client.TLS_HANDSHAKE_FAILED, False, self.relay) from None
        ssl_object = self._channel.transport.get_extra_info("ssl_object")
        self.tls = f"{ssl_object.version()}/{ssl_object.cipher()[0]}"
        self.conn.tls_started()
