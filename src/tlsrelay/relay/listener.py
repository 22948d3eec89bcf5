"""The listener: one asyncio Protocol per SMTP connection, driving the core.

How this works. A `Session` moves bytes between the socket, its TLS adapter
(relay/tlsio.py) and the sans-IO server core (smtp/server.py), and answers
the core's questions:

- MAIL: the peer's address against the location's filtering list
  (relay/access.py): listed goes on, pending gets 450 4.7.1, unknown
  554 5.7.1, and a node without a snapshot 451 4.3.0 (DESIGN.md).
- DATA / first BDAT: room on the spool disk, else 452 4.3.1; then a spool
  writer is opened and the `Received:` header (relay/trace.py) written first.
- content: handed to the writer as it arrives; the spool keeps the first
  256 KiB in memory and streams the rest of a big message to its file.
- end of content: the writer goes to the worker's group committer (one
  thread, relay/spool.py), which fsyncs it with every other message ending
  at that moment, renames them into the queue and fsyncs the directory;
  only then 250 2.0.0 with the queue id, and delivery is woken for the batch.
  A failed write or commit answers 452 4.3.1 and leaves nothing behind.

Each turn (one read from the socket) ends with a single write of everything
it produced, TLS handshake records, session tickets and replies together;
with TCP_NODELAY this avoids the Nagle/delayed-ACK stall described in
docs/decisions.md.

Submission ports speak plaintext first and require STARTTLS before MAIL
(530 5.7.0, enforced by the core). smtps ports start TLS at once and greet
inside it. Peers in [listen] proxy_from must open with a PROXY header
(relay/proxyproto.py), whose client address is then the one judged; a PROXY
header from anyone else is a protocol error and ends the connection.

While a commit runs, or while the socket's write buffer is full, the session
stops reading. Idle sessions time out after [limits] command_timeout_s, and
after data_timeout_s inside message content.

The mail log (logger "tlsrelay.mail") gets one line per event: connect,
tls, accept, reject, disconnect; queue id (or NOQUEUE) first, then key=value
fields in a fixed order. This module never sends exception text to a peer
and never logs message content.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable

from tlsrelay import config
from tlsrelay.relay import access, proxyproto, trace
from tlsrelay.relay.spool import (
    Committer,
    Envelope,
    Recipient,
    Spool,
    SpoolFull,
    Writer,
)
from tlsrelay.relay.tlsio import CertificateStore, TlsError, TlsSession
from tlsrelay.smtp import events, replies
from tlsrelay.smtp.replies import Reply
from tlsrelay.smtp.server import ServerConfig, ServerConnection

log = logging.getLogger(__name__)
maillog = logging.getLogger("tlsrelay.mail")

SUBMISSION = "submission"
SMTPS = "smtps"

ACCESS_REPLIES: dict[str, Reply | None] = {
    access.LISTED: None,
    access.PENDING: replies.ACCESS_PENDING,
    access.UNKNOWN: replies.ACCESS_DENIED,
    access.NO_SNAPSHOT: replies.NO_SNAPSHOT,
}

_session_ids = itertools.count(1)


def mail_log(queue_id: str | None, event: str, **fields: object) -> None:
    """One mail log line: `QUEUEID: event key=value ...` (NOQUEUE before one)."""
    if maillog.isEnabledFor(logging.INFO):
        text = " ".join(f"{k}={_quote(v)}" for k, v in fields.items() if v != "")
        maillog.info("%s: %s %s", queue_id or "NOQUEUE", event, text)


def _quote(value: object) -> str:
    text = str(value)
    if text and all(c.isprintable() and c not in ' "\\' for c in text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else "?" for c in escaped) + '"'


class Listener:
    """What every session of one worker shares: settings, TLS, list, spool."""

    def __init__(
        self,
        settings: config.Settings,
        certs: CertificateStore,
        access_list: access.AccessList,
        spool: Spool,
    ) -> None:
        self.settings = settings
        self.certs = certs
        self.access = access_list
        self.spool = spool
        self.committer = Committer(spool)
        self.location = settings.node.location.upper()
        self.proxy_from = [
            ipaddress.ip_network(n, strict=False) for n in settings.listen.proxy_from
        ]
        self.postmaster = settings.postmaster
        self.sessions: set[Session] = set()
        self.closing = False
        self._drained: asyncio.Event | None = None

    def factory(self, kind: str) -> Callable[[], Session]:
        return lambda: Session(self, kind)

    def core_config(self, tls_active: bool) -> ServerConfig:
        limits = self.settings.limits
        return ServerConfig(
            hostname=self.settings.node.hostname,
            tls_active=tls_active,
            starttls_available=not tls_active,
            require_tls=True,
            max_message_size=limits.max_message_size,
            max_recipients=limits.max_recipients,
            max_errors=limits.max_errors,
            postmaster=self.postmaster,
        )

    def is_proxy(self, ip: str) -> bool:
        if not self.proxy_from:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.proxy_from)

    def forget(self, session: Session) -> None:
        self.sessions.discard(session)
        if not self.sessions and self._drained is not None:
            self._drained.set()

    async def shutdown(self, grace_s: float) -> None:
        """Close idle sessions now, busy ones after their message or GRACE_S."""
        self.closing = True
        self._drained = asyncio.Event()
        for session in list(self.sessions):
            session.shutdown(force=False)
        if self.sessions:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), grace_s)
        for session in list(self.sessions):
            session.shutdown(force=True)


class Session(asyncio.Protocol):
    """One SMTP connection."""

    def __init__(self, listener: Listener, kind: str) -> None:
        self.listener = listener
        self.kind = kind
        self.id = f"{os.getpid():x}.{next(_session_ids):x}"
        self.transport: asyncio.Transport | None = None
        self.conn: ServerConnection | None = None
        self.tls: TlsSession | None = None
        self.peer_ip = ""
        self.peer_port = 0
        self.proxy_buffer: bytes | None = None  # set while a PROXY header is due
        self.first_data = True
        self.helo = ""
        self.esmtp = False
        self.declared_size = 0
        self.writer: Writer | None = None
        self.committing = False
        self.write_paused = False
        self.closed = False
        self.closing = False
        self.messages = 0
        self.started = time.monotonic()
        self.last_activity = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # -- connection life ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport.
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Replies and TLS records must not wait for ACKs (docs/decisions.md).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername") or ("", 0)
        self.peer_ip, self.peer_port = _plain_ip(peer[0]), peer[1]
        self.listener.sessions.add(self)
        self._arm_timer()
        if self.listener.is_proxy(self.peer_ip):
            self.proxy_buffer = b""
            return
        self._begin()

    def _begin(self) -> None:
        mail_log(
            None,
            "connect",
            session=self.id,
            client=self.peer_ip,
            client_port=self.peer_port,
            service=self.kind,
        )
        if self.listener.closing:
            self._abort_with(replies.SHUTTING_DOWN, "shutdown")
            return
        self.conn = ServerConnection(self.listener.core_config(self.kind == SMTPS))
        if self.kind == SMTPS:
            self.tls = self.listener.certs.session()
            return
        self._greet()

    def _greet(self) -> None:
        assert self.conn is not None
        delay_s = self.listener.settings.limits.greeting_delay_s
        if delay_s:
            asyncio.get_running_loop().call_later(delay_s, self._send_greeting)
        else:
            self._send_greeting()

    def _send_greeting(self) -> None:
        if self.closed or self.conn is None:
            return
        self.conn.send_greeting()
        self._pump()
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_activity = time.monotonic()
        try:
            if self.proxy_buffer is not None:
                self._proxy_data(data)
                return
            if self.first_data:
                self.first_data = False
                if len(data) >= 5 and proxyproto.looks_like_header(data):
                    self._protocol_error("proxy-header-not-allowed")
                    return
            self._receive(data)
        except Exception:
            self._internal_error()

    def eof_received(self) -> bool:
        if not self.closed and self.conn is not None:
            try:
                self._receive(b"")
            except Exception:
                self._internal_error()
        return False

    def _internal_error(self) -> None:
        """A bug of ours: log it with its traceback, tell the peer 421, close."""
        log.exception("session %s from %s failed", self.id, self.peer_ip)
        try:
            self._abort_with(replies.INTERNAL_ERROR, "internal-error")
        except Exception:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if not self.closed:
            self.closed = True
            self._log_disconnect("lost" if exc else "eof")
        if self.writer is not None and not self.committing:
            self.writer.abort()
            self.writer = None
        self.listener.forget(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._update_reading()

    def _update_reading(self) -> None:
        if self.closed or self.transport is None:
            return
        if self.write_paused or self.committing:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    # -- bytes in ------------------------------------------------------------

    def _proxy_data(self, data: bytes) -> None:
        buffer = self.proxy_buffer + data
        try:
            parsed = proxyproto.parse(buffer)
        except proxyproto.ProxyError:
            self._protocol_error("proxy-header-malformed")
            return
        if parsed is None:
            self.proxy_buffer = buffer
            return
        peer, used = parsed
        self.proxy_buffer = None
        if peer is not None:
            self.peer_ip, self.peer_port = _plain_ip(peer.ip), peer.port
        self._begin()
        rest = buffer[used:]
        if rest and not self.closed:
            self._receive(rest)

    def _receive(self, data: bytes) -> None:
        assert self.conn is not None
        try:
            plaintext = self._decrypt(data) if self.tls is not None else data
        except TlsError as exc:
            self._tls_failed(str(exc))
            return
        if plaintext or not data:
            self.conn.receive_data(plaintext)
        self._pump()
        self._flush()

    def _decrypt(self, data: bytes) -> bytes:
        assert self.tls is not None
        self.tls.feed(data)
        if not self.tls.established:
            if not self.tls.handshake():
                return b""
            self._tls_established()
        return self.tls.read() if data else b""

    def _tls_established(self) -> None:
        assert self.tls is not None and self.conn is not None
        cipher, bits = self.tls.cipher
        mail_log(
            None,
            "tls",
            session=self.id,
            client=self.peer_ip,
            version=self.tls.version,
            cipher=cipher,
            bits=bits,
        )
        if self.kind == SMTPS:
            self._greet()
        else:
            self.conn.tls_started()

    def _tls_failed(self, reason: str) -> None:
        mail_log(
            None, "tls-failed", session=self.id, client=self.peer_ip, reason=reason
        )
        self._flush()
        self._close("tls-failed")

    # -- the core's events ---------------------------------------------------

    def _pump(self) -> None:
        """Take events from the core until it needs bytes or a decision."""
        conn = self.conn
        assert conn is not None
        while not self.closed and not self.committing:
            if self.tls is not None and not self.tls.established:
                return
            event = conn.next_event()
            if event is events.NEED_DATA:
                return
            if event is events.CLOSED:
                self._close("closed")
                return
            self.HANDLERS[type(event)](self, event)

    def _on_hello(self, event: events.Hello) -> None:
        self.helo, self.esmtp = event.name, event.esmtp

    def _on_mail(self, event: events.MailFrom) -> None:
        assert self.conn is not None
        reply = ACCESS_REPLIES[self.listener.access.decide(self.peer_ip)]
        if reply is not None:
            self._reject(reply, "MAIL", event.sender)
            return
        self.declared_size = event.params.size or 0
        # As Postfix does with queue_minfree: refuse at MAIL, before the
        # client sends its recipients and data, when the spool cannot take it.
        if not self.listener.spool.has_room(self.declared_size):
            self._reject(replies.SPOOL_FULL, "MAIL", event.sender)
            return
        self.conn.accept()

    def _on_rcpt(self, event: events.RcptTo) -> None:
        assert self.conn is not None
        self.conn.accept()

    def _on_data(self, event: events.DataStart) -> None:
        assert self.conn is not None
        spool = self.listener.spool
        # Room was checked at MAIL; a disk that fills since then fails the
        # write itself, which answers 452 4.3.1 as well.
        try:
            self.writer = spool.writer(self._spool_envelope(event.envelope))
            self.writer.write(self._received(self.writer.queue_id, event.envelope))
        except SpoolFull as exc:
            self.writer = None
            log.warning("spool write failed: %s", exc)
            self._reject(replies.SPOOL_FULL, "DATA", event.envelope.sender)
            return
        self.conn.accept()

    def _on_body(self, event: events.Body) -> None:
        if self.writer is None:
            return
        try:
            self.writer.write(event.data)
        except SpoolFull as exc:
            log.warning("spool write failed: %s", exc)
            self.writer = None

    def _on_end(self, event: events.MessageEnd) -> None:
        if self.writer is None:
            self._reject(replies.SPOOL_FULL, "END-OF-DATA", event.envelope.sender)
            return
        self.committing = True
        self._update_reading()
        future = self.listener.committer.submit(self.writer)
        future.add_done_callback(lambda done: self._committed(done, event.envelope))

    def _committed(self, done: asyncio.Future[str], envelope: events.Envelope) -> None:
        try:
            self._after_commit(done, envelope)
        except Exception:
            self._internal_error()

    def _after_commit(
        self, done: asyncio.Future[str], envelope: events.Envelope
    ) -> None:
        assert self.conn is not None and self.writer is not None
        writer, self.writer = self.writer, None
        self.committing = False
        try:
            queue_id = done.result()
        except SpoolFull as exc:
            log.warning("spool commit failed: %s", exc)
            if not self.closed:
                self._reject(replies.SPOOL_FULL, "END-OF-DATA", envelope.sender)
        else:
            self.messages += 1
            self._log_accept(queue_id, writer, envelope)
            if not self.closed:
                self.conn.accept_message(queue_id)
        if self.closed:
            return
        if self.closing:
            self._flush()
            self._abort_with(replies.SHUTTING_DOWN, "shutdown")
            return
        self._update_reading()
        self._pump()
        self._flush()

    def _on_aborted(self, event: events.MessageAborted) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None
        if event.reply is not None:
            mail_log(
                None,
                "reject",
                session=self.id,
                client=self.peer_ip,
                stage="DATA",
                reason=event.reason,
                reply=str(event.reply),
            )

    def _on_starttls(self, event: events.StartTLS) -> None:
        assert self.conn is not None and self.transport is not None
        # The 220 goes out in plaintext; everything after it is TLS.
        self._write(self.conn.data_to_send())
        self.tls = self.listener.certs.session()

    def _on_closed(self, event: events.ConnectionClosed) -> None:
        self._close(event.reason)

    HANDLERS: dict[type, Callable[[Session, object], None]] = {
        events.Hello: _on_hello,
        events.MailFrom: _on_mail,
        events.RcptTo: _on_rcpt,
        events.DataStart: _on_data,
        events.Body: _on_body,
        events.MessageEnd: _on_end,
        events.MessageAborted: _on_aborted,
        events.StartTLS: _on_starttls,
        events.ConnectionClosed: _on_closed,
    }

    # -- decisions and their records -----------------------------------------

    def _reject(self, reply: Reply, stage: str, sender: str) -> None:
        assert self.conn is not None
        self.conn.reject(reply)
        mail_log(
            None,
            "reject",
            session=self.id,
            client=self.peer_ip,
            stage=stage,
            sender=f"<{sender}>",
            reply=str(reply),
        )

    def _spool_envelope(self, envelope: events.Envelope) -> Envelope:
        return Envelope(
            sender=envelope.sender,
            recipients=[
                Recipient(r.address, notify=r.notify, orcpt=r.orcpt)
                for r in envelope.recipients
            ],
            ret=envelope.ret,
            envid=envelope.envid,
            body=envelope.body,
            smtputf8=envelope.smtputf8,
            client_ip=self.peer_ip,
            client_helo=self.helo,
            tls=self.tls.describe() if self.tls is not None else "",
            location=self.listener.location,
        )

    def _received(self, queue_id: str, envelope: events.Envelope) -> bytes:
        version = cipher = ""
        bits = 0
        if self.tls is not None:
            version = self.tls.version
            cipher, bits = self.tls.cipher
        info = trace.TraceInfo(
            helo=self.helo,
            client_ip=self.peer_ip,
            hostname=self.listener.settings.node.hostname,
            esmtp=self.esmtp,
            tls_version=version,
            tls_cipher=cipher,
            tls_bits=bits,
            smtputf8=envelope.smtputf8,
        )
        return trace.received(info, queue_id, [r.address for r in envelope.recipients])

    def _log_accept(
        self, queue_id: str, writer: Writer, envelope: events.Envelope
    ) -> None:
        mail_log(
            queue_id,
            "accept",
            session=self.id,
            client=self.peer_ip,
            helo=self.helo,
            sender=f"<{envelope.sender}>",
            nrcpt=len(envelope.recipients),
            size=writer.size,
            tls=self.tls.version if self.tls is not None else "none",
        )

    def _log_disconnect(self, reason: str) -> None:
        mail_log(
            None,
            "disconnect",
            session=self.id,
            client=self.peer_ip,
            messages=self.messages,
            reason=reason,
            duration_s=f"{time.monotonic() - self.started:.3f}",
        )

    # -- bytes out and the end -----------------------------------------------

    def _flush(self, final: bool = False) -> None:
        """Send everything this turn produced in one write.

        FINAL adds TLS's close_notify, so the last replies and the alert
        leave together too.
        """
        if self.closed or self.transport is None:
            return
        plain = self.conn.data_to_send() if self.conn is not None else b""
        if self.tls is None:
            self._write(plain)
            return
        # Before the handshake completes there is nothing to say inside TLS.
        if self.tls.established:
            try:
                if plain:
                    self.tls.write(plain)
                if final:
                    self.tls.close()
            except TlsError:
                pass
        self._write(self.tls.take_output())

    def _write(self, data: bytes) -> None:
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def _close(self, reason: str) -> None:
        if self.closed:
            return
        self._flush(final=True)
        self.closed = True
        self._log_disconnect(reason)
        if self.transport is not None:
            self.transport.close()

    def _abort_with(self, reply: Reply, reason: str) -> None:
        """Send REPLY outside the core's dialogue (timeout, shutdown) and close."""
        if self.closed:
            return
        if self.conn is not None:
            self.conn.close(reply)
        elif self.tls is None:
            self._write(reply.to_bytes())
        self._close(reason)

    def _protocol_error(self, reason: str) -> None:
        mail_log(None, "reject", session=self.id, client=self.peer_ip, reason=reason)
        self._close(reason)

    def shutdown(self, force: bool) -> None:
        if force or not (self.committing or self.writer is not None):
            self._abort_with(replies.SHUTTING_DOWN, "shutdown")
        else:
            self.closing = True

    # -- time ------------------------------------------------------------------

    def _arm_timer(self) -> None:
        self.last_activity = time.monotonic()
        limits = self.listener.settings.limits
        delay_s = limits.data_timeout_s if self.writer else limits.command_timeout_s
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(delay_s, self._check_timeout)

    def _check_timeout(self) -> None:
        """Fires at most once per timeout period, however busy the session."""
        if self.closed:
            return
        limits = self.listener.settings.limits
        limit_s = limits.data_timeout_s if self.writer else limits.command_timeout_s
        idle_s = time.monotonic() - self.last_activity
        if self.committing or idle_s < limit_s:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(
                max(limit_s - idle_s, 0.05), self._check_timeout
            )
            return
        self._abort_with(replies.TIMEOUT, "timeout")


def _plain_ip(ip: str) -> str:
    """An IPv4-mapped IPv6 address as plain IPv4; others unchanged."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return str(addr.ipv4_mapped)
    return str(addr)
