"""A scriptable test MX on loopback: real sockets, real TLS, every byte kept.

    options = MxOptions(dsn=False, rcpt={"nobody@example.org": "550 5.1.1 No"})
    with TestMx(options) as mx:
        ... deliver to ("127.0.0.1", mx.port) ...
        mx.wait_for_messages(1)
        [msg] = mx.messages
        msg.mail_from, msg.rcpts, msg.content, msg.tls
        mx.sessions[0].received            # every byte the client sent

It runs its own asyncio loop in a thread, so sync and async tests use it the
same way. Options choose the extensions it advertises (STARTTLS, PIPELINING,
8BITMIME, SMTPUTF8, DSN, SIZE), per-recipient replies (a list is used one
reply per attempt, the last one repeating), MAIL and end-of-data replies,
a multi-line greeting, and plaintext to inject after its 220 reply to
STARTTLS (case 07). Its certificate comes from a trustme CA (`mx.ca`).

It is deliberately simple and lenient: it parses commands line by line,
unstuffs DATA (RFC 5321 4.5.2) and keeps both the raw bytes and the
content, so tests can check exactly what a client wrote. It is not a model
of a correct server; do not test tlsrelay's own server against it.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from dataclasses import dataclass, field

import trustme


@dataclass
class MxOptions:
    hostname: str = "mx.example.org"
    greeting: tuple[str, ...] = ("220 mx.example.org ESMTP test MX",)
    starttls: bool = True
    pipelining: bool = True
    eightbitmime: bool = True
    smtputf8: bool = True
    dsn: bool = True
    size: int = 0  # advertised SIZE limit; 0 = no SIZE keyword
    # Sent in the same write as "220 2.0.0 Ready" (case 07).
    inject_after_starttls: bytes = b""
    # Lower-cased address -> reply, or a list used one per attempt.
    rcpt: dict[str, str | list[str]] = field(default_factory=dict)
    mail_reply: str = "250 2.1.0 Ok"
    data_reply: str = "250 2.0.0 Ok: queued"
    ehlo_reply: str = ""  # e.g. "502 5.5.1 no EHLO" to force HELO
    # Reply to STARTTLS; anything but 220 leaves the session in plaintext.
    starttls_reply: str = "220 2.0.0 Ready"
    # After the 220 to STARTTLS, close instead of doing the handshake.
    break_handshake: bool = False
    # Withhold MAIL/RCPT replies until DATA arrives: a client that waits for
    # each reply stalls, so only a pipelining client gets through.
    batch_replies: bool = False


@dataclass
class Received:
    """One message as the MX received it."""

    mail_from: str
    mail_params: list[str]
    rcpts: list[tuple[str, list[str]]]
    raw_data: bytes  # bytes after 354, up to and including ".\r\n"
    content: bytes  # unstuffed
    tls: str  # TLS version, "" for plaintext
    session: int


@dataclass
class Session:
    index: int = 0
    received: bytearray = field(default_factory=bytearray)
    sent: bytearray = field(default_factory=bytearray)
    commands: list[str] = field(default_factory=list)
    tls: str = ""
    # Sizes of each read from the socket: shows what came in one write.
    reads: list[bytes] = field(default_factory=list)


class TestMx:
    __test__ = False  # not a pytest test class

    def __init__(self, options: MxOptions | None = None, host: str = "127.0.0.1"):
        self.options = options or MxOptions()
        self.host = host
        self.port = 0
        self.ca = trustme.CA()
        self.messages: list[Received] = []
        self.sessions: list[Session] = []
        self._attempts: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        cert = self.ca.issue_cert(self.options.hostname)
        self.ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
        cert.configure_cert(self.ssl_context)

    # -- running -------------------------------------------------------------

    def start(self) -> TestMx:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._session, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> TestMx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def wait_for_messages(self, count: int, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.messages)} of {count} messages came")
            time.sleep(0.01)

    # -- the dialogue --------------------------------------------------------

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        session = Session(index=len(self.sessions))
        self.sessions.append(session)
        try:
            await _Dialogue(self, session, reader, writer).run()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    def rcpt_reply(self, address: str) -> str:
        planned = self.options.rcpt.get(address.lower(), "250 2.1.5 Ok")
        if isinstance(planned, str):
            return planned
        n = self._attempts.get(address.lower(), 0)
        self._attempts[address.lower()] = n + 1
        return planned[min(n, len(planned) - 1)]


class _Dialogue:
    def __init__(self, mx: TestMx, session: Session, reader, writer) -> None:
        self.mx = mx
        self.opt = mx.options
        self.session = session
        self.reader = reader
        self.writer = writer
        self.mail: tuple[str, list[str]] | None = None
        self.rcpts: list[tuple[str, list[str]]] = []
        self.held: list[str] = []

    async def send(self, *lines: str, extra: bytes = b"") -> None:
        if self.opt.batch_replies and self.session.commands:
            verb = self.session.commands[-1].split(" ", 1)[0].upper()
            if verb in ("MAIL", "RCPT"):
                self.held += lines
                return
            lines, self.held = (*self.held, *lines), []
        data = "".join(line + "\r\n" for line in lines).encode() + extra
        self.session.sent += data
        self.writer.write(data)
        await self.writer.drain()

    async def line(self) -> bytes:
        try:
            data = await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            self.session.received += exc.partial
            raise
        except asyncio.LimitOverrunError:
            data = await self.reader.read(65536)
        self.session.received += data
        self.session.reads.append(data)
        return data

    def ehlo_lines(self) -> list[str]:
        keywords = [self.opt.hostname]
        wanted = [
            (self.opt.pipelining, "PIPELINING"),
            (self.opt.size > 0, f"SIZE {self.opt.size}"),
            (self.opt.starttls and not self.session.tls, "STARTTLS"),
            (self.opt.eightbitmime, "8BITMIME"),
            (self.opt.smtputf8, "SMTPUTF8"),
            (self.opt.dsn, "DSN"),
            (True, "ENHANCEDSTATUSCODES"),
        ]
        keywords += [word for on, word in wanted if on]
        return [
            f"250{'-' if i < len(keywords) - 1 else ' '}{k}"
            for i, k in enumerate(keywords)
        ]

    async def run(self) -> None:
        await self.send(*self.opt.greeting)
        while True:
            raw = await self.line()
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.session.commands.append(text)
            verb = text.split(" ", 1)[0].upper()
            handler = getattr(self, "on_" + verb.lower(), None)
            if handler is None:
                await self.send("502 5.5.2 Unknown command")
            elif await handler(text):
                return

    async def on_ehlo(self, text: str) -> bool:
        if self.opt.ehlo_reply:
            await self.send(self.opt.ehlo_reply)
        else:
            await self.send(*self.ehlo_lines())
        return False

    async def on_helo(self, text: str) -> bool:
        await self.send(f"250 {self.opt.hostname}")
        return False

    async def on_starttls(self, text: str) -> bool:
        if not self.opt.starttls or self.session.tls:
            await self.send("503 5.5.1 No STARTTLS now")
            return False
        await self.send(self.opt.starttls_reply, extra=self.opt.inject_after_starttls)
        if not self.opt.starttls_reply.startswith("220"):
            return False
        if self.opt.break_handshake:
            return True
        await self.writer.start_tls(self.mx.ssl_context)
        ssl_object = self.writer.get_extra_info("ssl_object")
        self.session.tls = ssl_object.version()
        self.mail, self.rcpts = None, []
        return False

    async def on_mail(self, text: str) -> bool:
        path, params = _path_and_params(text, "MAIL FROM:")
        if self.opt.mail_reply.startswith("2"):
            self.mail, self.rcpts = (path, params), []
        await self.send(self.opt.mail_reply)
        return False

    async def on_rcpt(self, text: str) -> bool:
        if self.mail is None:
            await self.send("503 5.5.1 MAIL first")
            return False
        path, params = _path_and_params(text, "RCPT TO:")
        reply = self.mx.rcpt_reply(path)
        if reply.startswith("2"):
            self.rcpts.append((path, params))
        await self.send(reply)
        return False

    async def on_data(self, text: str) -> bool:
        if self.mail is None or not self.rcpts:
            await self.send("554 5.5.1 No valid recipients")
            return False
        await self.send("354 End data with <CR><LF>.<CR><LF>")
        raw = bytearray()
        content = bytearray()
        while True:
            data = await self.line()
            raw += data
            if data == b".\r\n":
                break
            content += data[1:] if data.startswith(b".") else data
        self.mx.messages.append(
            Received(
                self.mail[0],
                self.mail[1],
                list(self.rcpts),
                bytes(raw),
                bytes(content),
                self.session.tls,
                self.session.index,
            )
        )
        self.mail, self.rcpts = None, []
        await self.send(self.opt.data_reply)
        return False

    async def on_rset(self, text: str) -> bool:
        self.mail, self.rcpts = None, []
        await self.send("250 2.0.0 Ok")
        return False

    async def on_noop(self, text: str) -> bool:
        await self.send("250 2.0.0 Ok")
        return False

    async def on_quit(self, text: str) -> bool:
        await self.send("221 2.0.0 Bye")
        return True


def _path_and_params(text: str, prefix: str) -> tuple[str, list[str]]:
    rest = text[len(prefix) :].strip() if text.upper().startswith(prefix) else ""
    if rest.startswith("<") and ">" in rest:
        path, _, params = rest[1:].partition(">")
        return path, params.split()
    return rest, []
