"""The SMTP server core: bytes in, events and replies out, no I/O.

How to drive it (the listener does this for every session)::

    conn = ServerConnection(ServerConfig(hostname="lon-tls.relay.example"))
    conn.send_greeting()                  # queues 220; bytes before it: 554
    out = conn.data_to_send()             # write these to the peer
    conn.receive_data(chunk)              # b"" means the peer closed
    while True:
        event = conn.next_event()
        if event is NEED_DATA: break      # read more (flush data_to_send first)
        if event is CLOSED: ...           # flush, close
        ...

Events (events.py) that need the application's answer before the core parses
anything further; calling ``next_event()`` before answering raises
``UsageError``:

- ``MailFrom`` and ``RcptTo``: ``conn.accept()`` or ``conn.reject(reply)``.
  After MAIL was rejected by the application, every RCPT (and DATA/BDAT) of
  that attempt is answered with the same reply until RSET, EHLO or a new
  MAIL: the access decision at MAIL is repeated at RCPT (DESIGN.md).
- ``DataStart`` (DATA, or the first BDAT of a transaction): ``accept()``
  (354 for DATA) or ``reject(reply)``; the envelope is then dropped.
- ``MessageEnd``: ``conn.accept_message(queue_id)`` (250 2.0.0 with the id)
  or ``reject(reply)``.  The transaction ends either way.

Events that only inform: ``Hello``, ``Body`` (content: dot-unstuffed after
DATA, as sent for BDAT), ``MessageAborted`` (the core refused the content
after reading to its real end, or EOF came mid-message: drop what Body
gave), ``StartTLS`` (the core queued ``220 2.0.0`` and discarded every byte
after the STARTTLS line; flush, hand the socket to TLS, call
``conn.tls_started()``; the session starts over and needs EHLO again) and
``ConnectionClosed`` (flush and close; afterwards ``next_event()`` returns
``CLOSED``).  ``conn.close(reply)`` ends the session from the application's
side (timeouts, shutdown).  Read-only attributes for logs: ``conn.state``
(the reading mode's name), ``conn.helo``, ``conn.esmtp``, ``conn.tls_active``,
``conn.errors``.

Replies are queued in order and handed out by ``data_to_send()``, so a
pipelined group (RFC 2920) is answered in one write when the application
flushes only on NEED_DATA.

Policies (cases in ../shared/cases, beside the repository):

- Lines end only at CRLF.  A bare CR or LF in a command line: 501 5.5.2 and
  the session goes on (case 08).  In DATA or BDAT content: the content is
  read to its real end, then 500 5.5.2, nothing queued (cases 01, 04).
- Command lines: 512 octets, MAIL/RCPT 2048 (extension parameters, RFC 5321
  4.5.3.1.4); longer: 500 5.5.2 Line too long.  A line over 4096 octets is
  skipped to its CRLF without being buffered (case 15).
- Text lines over 1000 octets: read to the real end, then 500 5.5.2 (case 14).
- Early talker: bytes received before ``send_greeting()``: 554 5.5.1 and
  close (case 16).
- Errors: every 4xx/5xx reply (the application's included) counts; at
  ``max_errors`` the core sends 421 4.7.0 and closes.  Exception: the 452
  4.5.3 for recipients over ``max_recipients`` (RFC 5321 4.5.3.1.10: the
  client sends the rest in a later transaction) counts only after as many
  again were refused, like Postfix's recipient overshoot limit, so a long
  pipelined RCPT list does not lose the accepted part of the transaction.
  NOOP, RSET, VRFY and HELP count toward ``max_junk_commands`` (like
  Postfix's junk limit).
- Null sender: accepted, with any number of recipients (case 24).
- 8-bit content without BODY=8BITMIME is accepted and recorded as
  ``envelope.body == "8BITMIME"`` (case 23).
- Recipients at an address literal (``x@[192.0.2.1]``, ``x@[IPv6:...]``)
  get 550 5.1.2: the relay never delivers to an IP address the sender
  chose, and such mail could only bounce later.  Literals stay allowed in
  MAIL FROM and EHLO, where they only describe the client.
- Octets that are not valid UTF-8 in a path are a syntax error (501 5.1.7
  for MAIL, 501 5.1.3 for RCPT), with or without SMTPUTF8; valid UTF-8
  without SMTPUTF8 is 553 5.6.7.
- EHLO/HELO: the argument must look like an ASCII host name or an address
  literal, else 501 5.5.2 (non-ASCII, control characters, other
  punctuation: it ends up in the Received: header).  Lenient like Postfix:
  underscores, a trailing dot, single labels and bare IPs pass.
- Unqualified recipients get 501 5.1.3, ``<postmaster>`` too unless
  ``ServerConfig.postmaster`` names the full address it stands for.
- BDAT: the chunk is always read, also when the command is refused (case
  05, and with ``chunking=False``: 502 5.5.1 after the chunk).  A BDAT
  whose size cannot be parsed (or whose line is too long) gets 501 5.5.4
  (or 500 5.5.2) then 421 4.5.0, and the session is closed, since the
  octets that follow could not be skipped.  Content rules (bare
  CR/LF, line length, size) apply to BDAT content as to DATA; a failing chunk
  is answered with the error and ends the transaction (RFC 3030 2).
- A bug inside the core answers 421 4.3.0 and closes; no exception text is
  ever sent.

RFCs: 5321 (SMTP), 1869/5321 4.1.1.1 (EHLO), 2920 (PIPELINING), 1870 (SIZE),
6152 (8BITMIME), 6531 (SMTPUTF8), 2034 (ENHANCEDSTATUSCODES), 3030
(CHUNKING), 3461 (DSN), 3207 (STARTTLS).  This module must never import
asyncio, ssl, socket or logging, nor keep more than one line or one read
of message content in memory.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from tlsrelay.smtp import address, lines, replies
from tlsrelay.smtp.address import AddressError
from tlsrelay.smtp.events import (
    CLOSED,
    NEED_DATA,
    Body,
    ConnectionClosed,
    DataStart,
    Envelope,
    Event,
    Hello,
    MailFrom,
    MessageAborted,
    MessageEnd,
    RcptParams,
    RcptTo,
    Recipient,
    Sentinel,
    StartTLS,
)
from tlsrelay.smtp.replies import Reply

__all__ = ["ServerConfig", "ServerConnection", "UsageError", "NEED_DATA", "CLOSED"]


class UsageError(RuntimeError):
    """The application drove the core wrongly (our bug, never the peer's)."""


@dataclass(frozen=True)
class ServerConfig:
    hostname: str
    tls_active: bool = False  # True on implicit-TLS (smtps) ports
    starttls_available: bool = True
    require_tls: bool = True  # MAIL and friends before TLS: 530 5.7.0
    max_message_size: int = 50 * 1024 * 1024
    max_recipients: int = 1000
    max_errors: int = 20
    max_junk_commands: int = 100
    postmaster: str = ""  # what RCPT TO:<postmaster> means; "" refuses it
    chunking: bool = True


# The content problems the line rules find, as replies and reasons.
_CONTENT_PROBLEMS = {
    lines.BARE_NEWLINE: replies.BARE_NEWLINE_DATA,
    lines.LINE_TOO_LONG: replies.LINE_TOO_LONG,
}
_ABORT_REASONS = {
    replies.BARE_NEWLINE_DATA: "bare-newline",
    replies.LINE_TOO_LONG: "line-too-long",
    replies.TOO_BIG: "too-big",
}
_BDAT_ARGS = re.compile(r"([0-9]{1,15})(?: +(LAST))? *", re.IGNORECASE)


@dataclass
class Content:
    """One message's content as it streams through: size, 8-bit, problem."""

    max_size: int
    size: int = 0
    eight_bit: bool = False
    problem: Reply | None = None
    checker: lines.ChunkChecker = field(default_factory=lines.ChunkChecker)

    def add(self, data: bytes) -> bool:
        """Count ``data``; True while the content is still acceptable."""
        self.size += len(data)
        if self.size > self.max_size:
            self.problem = replies.TOO_BIG
        elif not self.eight_bit and not data.isascii():
            self.eight_bit = True
        return self.problem is None


@dataclass
class Transaction:
    envelope: Envelope
    content: Content
    chunking: bool = False  # a BDAT of this transaction was accepted
    overshoot: int = 0  # RCPTs refused for being over max_recipients


# Reading modes.  Each carries the data it needs; the step functions are
# looked up by mode type in ServerConnection._STEPS.
@dataclass
class Greeting:
    """Before the 220: any byte from the peer is an early talker."""


@dataclass
class Commands:
    """Reading command lines."""


@dataclass
class SkipLine:
    """Skipping an over-long command line up to its CRLF."""

    verb: bytes  # the line's first word, enough to know a BDAT


@dataclass
class Decide:
    """Waiting for the application's answer to ``event``."""

    event: Event
    on_accept: Callable[[Reply | None], None]
    on_reject: Callable[[Reply], None]


@dataclass
class ReadData:
    """DATA content; the buffer always starts at a line start."""

    txn: Transaction


@dataclass
class SkipData:
    """Refused DATA content: looking only for the real end of data."""

    txn: Transaction
    at_line_start: bool = True


@dataclass
class ReadChunk:
    """A BDAT chunk: into ``txn``, or discarded and answered ``refusal``."""

    remaining: int
    last: bool
    size: int
    txn: Transaction | None = None
    refusal: Reply | None = None


@dataclass
class AwaitTLS:
    """STARTTLS answered; everything received is discarded until TLS runs."""


@dataclass
class Closed:
    """The session is over."""


Mode = (
    Greeting
    | Commands
    | SkipLine
    | Decide
    | ReadData
    | SkipData
    | ReadChunk
    | AwaitTLS
    | Closed
)


@dataclass(frozen=True)
class Command:
    """One row of the command table."""

    verb: str
    handler: Callable[[ServerConnection, str], None]
    before_tls: bool  # allowed before TLS when the port requires TLS
    junk: bool  # counts toward max_junk_commands


class ServerConnection:
    """One SMTP session's protocol state (see the module docstring)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.tls_active = config.tls_active
        self.helo: str | None = None
        self.esmtp = False
        self.errors = 0
        self._junk = 0
        self._mode: Mode = Greeting()
        self._txn: Transaction | None = None
        self._mail_refusal: Reply | None = None
        self._buf = bytearray()
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._eof = False

    # ----- the application's side ------------------------------------------

    @property
    def state(self) -> str:
        """The reading mode's name, for logs and tests."""
        return type(self._mode).__name__

    def send_greeting(self) -> None:
        if isinstance(self._mode, Closed):
            return
        if not isinstance(self._mode, Greeting):
            raise UsageError("greeting already sent")
        self._reply(replies.GREETING.format(hostname=self.config.hostname))
        self._mode = Commands()

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` when it closed its side."""
        if isinstance(self._mode, Closed | AwaitTLS):
            return
        if not data:
            self._eof = True
        elif isinstance(self._mode, Greeting):
            self._close("early-talker", replies.EARLY_TALKER)
        else:
            self._buf += data

    def next_event(self) -> Event | Sentinel:
        if isinstance(self._mode, Decide) and not self._events:
            raise UsageError("answer the pending event first")
        try:
            while not self._events:
                progressed = self._STEPS[type(self._mode)](self, self._mode)
                self._check_limits()
                if not progressed and not self._events:
                    return CLOSED if isinstance(self._mode, Closed) else NEED_DATA
            return self._events.popleft()
        except UsageError:
            raise
        except Exception:
            return self._internal_error()

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def accept(self, reply: Reply | None = None) -> None:
        """Accept MailFrom, RcptTo or DataStart (optionally with own reply)."""
        decision = self._pending(MessageEnd, expect=False)
        self._run(decision.on_accept, reply)

    def reject(self, reply: Reply) -> None:
        """Refuse the pending event with a 4xx or 5xx reply."""
        if not reply.is_error:
            raise UsageError("reject() needs a 4xx or 5xx reply")
        decision = self._pending(MessageEnd, expect=None)
        self._run(decision.on_reject, reply)

    def accept_message(self, queue_id: str) -> None:
        """The message of MessageEnd is safely spooled as ``queue_id``."""
        decision = self._pending(MessageEnd, expect=True)
        self._run(decision.on_accept, replies.QUEUED.format(queue_id=queue_id))

    def tls_started(self) -> None:
        """TLS is up after StartTLS: the session starts over (RFC 3207 4.2)."""
        if not isinstance(self._mode, AwaitTLS):
            raise UsageError("tls_started() without STARTTLS")
        self.tls_active = True
        self.helo = None
        self.esmtp = False
        self._txn = None
        self._mail_refusal = None
        self._buf.clear()
        self._mode = Commands()

    def close(self, reply: Reply | None = None) -> None:
        """End the session from the application's side (timeout, shutdown)."""
        if reply is not None and not isinstance(self._mode, Closed):
            self._reply(reply)
        self._events.clear()
        self._mode = Closed()
        self._buf.clear()

    # ----- decisions ---------------------------------------------------------

    def _pending(self, kind: type, expect: bool | None) -> Decide:
        mode = self._mode
        if not isinstance(mode, Decide) or self._events:
            raise UsageError("no event is waiting for a decision")
        if expect is not None and isinstance(mode.event, kind) != expect:
            raise UsageError("wrong kind of answer for " + type(mode.event).__name__)
        return mode

    def _run(self, callback: Callable, reply: Reply | None) -> None:
        self._mode = Commands()
        try:
            callback(reply)
            self._check_limits()
        except Exception:
            self._events.append(self._internal_error())

    def _decide(self, event: Event, on_accept, on_reject) -> None:
        self._events.append(event)
        self._mode = Decide(event, on_accept, on_reject)

    # ----- replies, limits, closing -----------------------------------------

    def _reply(self, reply: Reply, counts: bool = True) -> None:
        self._out += reply.to_bytes()
        if counts and reply.is_error and not reply.closes:
            self.errors += 1

    def _check_limits(self) -> None:
        if isinstance(self._mode, Closed):
            return
        if self.errors >= self.config.max_errors:
            self._close("too-many-errors", replies.TOO_MANY_ERRORS)

    def _close(self, reason: str, reply: Reply | None = None) -> None:
        if reply is not None:
            self._reply(reply)
        self._events.append(ConnectionClosed(reason))
        self._mode = Closed()
        self._buf.clear()

    def _internal_error(self) -> ConnectionClosed:
        # Whatever went wrong, the peer sees only the catalogue's 421.
        self._events.clear()
        self._buf.clear()
        self._out += replies.INTERNAL_ERROR.to_bytes()
        self._mode = Closed()
        return ConnectionClosed("internal-error")

    def _starved(self) -> bool:
        """No more input for now: at EOF end the session, else need data."""
        if not self._eof:
            return False
        if isinstance(self._mode, ReadData | SkipData) or (
            isinstance(self._mode, ReadChunk) and self._mode.txn is not None
        ):
            self._events.append(MessageAborted(None, "eof"))
        self._close("eof")
        return True

    # ----- reading steps: each returns True when it made progress -----------

    def _step_idle(self, mode: Mode) -> bool:
        return False

    def _step_greeting(self, mode: Greeting) -> bool:
        return self._starved()

    def _step_commands(self, mode: Commands) -> bool:
        buf = self._buf
        end = buf.find(b"\r\n", 0, lines.MAX_ANY_LINE)
        if end < 0:
            if len(buf) >= lines.MAX_ANY_LINE:
                self._mode = SkipLine(bytes(buf[:5]).split(b" ")[0].upper())
                return True
            return self._starved()
        line = bytes(buf[:end])
        del buf[: end + 2]
        self._command_line(line)
        return True

    def _step_skip_line(self, mode: SkipLine) -> bool:
        buf = self._buf
        end = buf.find(b"\r\n")
        if end >= 0:
            del buf[: end + 2]
            self._mode = Commands()
            self._line_refused(mode.verb, replies.LINE_TOO_LONG)
            return True
        # Keep a final CR: its LF may come in the next read.
        del buf[: len(buf) - 1 if buf.endswith(b"\r") else len(buf)]
        return self._starved()

    def _step_data(self, mode: ReadData) -> bool:
        buf = self._buf
        if lines.may_start_end_of_data(buf):
            return self._starved()
        end = lines.find_end_of_data(buf, at_line_start=True)
        if end >= 0:
            self._data_block(mode.txn.content, end)
            del buf[: end + 3]
            self._end_content(mode.txn)
            return True
        cut = buf.rfind(b"\r\n") + 2
        if cut >= 2:
            self._data_block(mode.txn.content, cut)
            del buf[:cut]
        content = mode.txn.content
        if content.problem is None and len(buf) >= lines.MAX_TEXT_LINE:
            content.problem = replies.LINE_TOO_LONG
        if content.problem is not None:
            self._mode = SkipData(mode.txn)
            return True
        return cut >= 2 or self._starved()

    def _data_block(self, content: Content, size: int) -> None:
        """Check, unstuff and hand out the first ``size`` octets (whole lines)."""
        if content.problem is not None or size == 0:
            return
        with memoryview(self._buf) as view:
            block = bytes(view[:size])
        found = lines.check_lines(block)
        if found is not None:
            content.problem = _CONTENT_PROBLEMS[found]
            return
        data = lines.unstuff(block)
        if content.add(data) and data:
            self._events.append(Body(data))

    def _step_skip_data(self, mode: SkipData) -> bool:
        buf = self._buf
        if mode.at_line_start:
            if lines.may_start_end_of_data(buf):
                return self._starved()
            mode.at_line_start = False
            if buf.startswith(b".\r\n"):
                del buf[:3]
                self._end_content(mode.txn)
                return True
        index = buf.find(lines.END_OF_DATA)
        if index >= 0:
            del buf[: index + len(lines.END_OF_DATA)]
            self._end_content(mode.txn)
            return True
        # The terminator is five octets: four are enough to find it later.
        del buf[:-4]
        return self._starved()

    def _step_chunk(self, mode: ReadChunk) -> bool:
        buf = self._buf
        if mode.remaining:
            if not buf:
                return self._starved()
            take = min(mode.remaining, len(buf))
            if mode.txn is not None:
                with memoryview(buf) as view:
                    piece = bytes(view[:take])
                self._chunk_piece(mode.txn.content, piece)
            del buf[:take]
            mode.remaining -= take
            if mode.remaining:
                return True
        self._mode = Commands()
        if mode.txn is None:
            self._reply(mode.refusal or replies.NEED_MAIL)
        elif mode.last:
            mode.txn.content.checker.finish()
            self._content_problem(mode.txn.content)
            self._end_content(mode.txn)
        elif mode.txn.content.problem is not None:
            self._end_content(mode.txn)
        else:
            self._reply(replies.CHUNK_OK.format(octets=mode.size))
        return True

    def _chunk_piece(self, content: Content, piece: bytes) -> None:
        if content.problem is not None:
            return
        content.checker.feed(piece)
        if not self._content_problem(content) and content.add(piece):
            self._events.append(Body(piece))

    @staticmethod
    def _content_problem(content: Content) -> bool:
        found = content.checker.problem
        if found is not None and content.problem is None:
            content.problem = _CONTENT_PROBLEMS[found]
        return content.problem is not None

    def _end_content(self, txn: Transaction) -> None:
        """The real end of a message's content: refuse it or ask the app."""
        self._txn = None
        self._mode = Commands()
        content = txn.content
        if content.problem is not None:
            self._reply(content.problem)
            reason = _ABORT_REASONS[content.problem]
            self._events.append(MessageAborted(content.problem, reason))
            return
        envelope = txn.envelope
        envelope.size = content.size
        if content.eight_bit:
            envelope.body = "8BITMIME"
        self._decide(MessageEnd(envelope), self._reply, self._reply)

    # ----- command lines -----------------------------------------------------

    def _command_line(self, line: bytes) -> None:
        verb = line.split(b" ", 1)[0].upper()
        limit = lines.MAX_COMMAND_LINE
        if verb in (b"MAIL", b"RCPT"):
            limit = lines.MAX_ENVELOPE_LINE
        if len(line) + 2 > limit:
            self._line_refused(verb, replies.LINE_TOO_LONG)
        elif b"\r" in line or b"\n" in line:
            self._line_refused(verb, replies.BARE_NEWLINE_COMMAND)
        else:
            self._dispatch(line.decode("utf-8", "surrogateescape"))

    def _line_refused(self, verb: bytes, reply: Reply) -> None:
        if verb == b"BDAT":
            # The chunk size is not trustworthy, so the stream cannot be kept
            # in sync: answer and close rather than read data as commands.
            self._bdat_unsynced(reply)
        else:
            self._reply(reply)

    def _bdat_unsynced(self, reply: Reply) -> None:
        """Refuse a BDAT line whose chunk cannot be skipped, then close."""
        self._reply(reply)
        self._close("bdat-syntax", replies.BDAT_UNSYNCED)

    def _dispatch(self, text: str) -> None:
        verb, _, arg = text.partition(" ")
        command = COMMANDS.get(verb.upper())
        if command is None:
            self._reply(replies.UNKNOWN_COMMAND)
            return
        if command.junk:
            self._junk += 1
            if self._junk > self.config.max_junk_commands:
                self._close("too-many-commands", replies.TOO_MANY_COMMANDS)
                return
        if self.config.require_tls and not self.tls_active and not command.before_tls:
            self._refuse(command.verb, arg, replies.NOT_TLS)
            return
        command.handler(self, arg)

    def _refuse(self, verb: str, arg: str, reply: Reply) -> None:
        """Answer ``reply``; for BDAT only after reading its chunk."""
        if verb != "BDAT":
            self._reply(reply)
            return
        parsed = _bdat_args(arg)
        if parsed is None:
            self._bdat_unsynced(replies.BDAT_SYNTAX)
        else:
            size, last = parsed
            self._mode = ReadChunk(size, last, size, refusal=reply)

    def _cmd_ehlo(self, arg: str) -> None:
        self._hello("EHLO", arg, esmtp=True)

    def _cmd_helo(self, arg: str) -> None:
        self._hello("HELO", arg, esmtp=False)

    def _hello(self, verb: str, arg: str, esmtp: bool) -> None:
        name = arg.strip(" ")
        if not name or " " in name:
            self._reply(replies.HELO_SYNTAX.format(verb=verb))
            return
        if not address.helo_name_ok(name):
            self._reply(replies.HELO_BAD_NAME.format(verb=verb))
            return
        self.helo, self.esmtp = name, esmtp
        self._txn = None  # RFC 5321 4.1.4: EHLO resets the transaction
        self._mail_refusal = None
        hostname = self.config.hostname
        if esmtp:
            keywords = "\n".join(self._keywords())
            self._reply(replies.EHLO_OK.format(hostname=hostname, keywords=keywords))
        else:
            self._reply(replies.HELO_OK.format(hostname=hostname))
        self._events.append(Hello(name, esmtp))

    def _keywords(self) -> list[str]:
        words = ["PIPELINING", f"SIZE {self.config.max_message_size}", "8BITMIME"]
        words += ["SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN"]
        if self.config.chunking:
            words.append("CHUNKING")
        # RFC 3207 4.2: never offered again once TLS runs.
        if self.config.starttls_available and not self.tls_active:
            words.append("STARTTLS")
        return words

    def _cmd_starttls(self, arg: str) -> None:
        if arg.strip(" "):
            self._reply(replies.NO_ARGUMENTS)
        elif self.tls_active:
            self._reply(replies.ALREADY_TLS)
        elif not self.config.starttls_available:
            self._reply(replies.TLS_UNAVAILABLE)
        elif self.helo is None:
            self._reply(replies.NEED_HELO)
        else:
            # RFC 3207 4.2, case 06: nothing sent before TLS may be used after.
            self._reply(replies.READY_TLS)
            self._buf.clear()
            self._txn = None
            self._mode = AwaitTLS()
            self._events.append(StartTLS())

    def _cmd_mail(self, arg: str) -> None:
        if self.helo is None:
            self._reply(replies.NEED_HELO)
        elif self._txn is not None:
            self._reply(replies.NESTED_MAIL)
        elif arg[:5].upper() != "FROM:":
            self._reply(replies.MAIL_SYNTAX)
        else:
            self._mail_refusal = None
            try:
                sender, params = self._parse_mail(arg[5:].lstrip(" "))
            except AddressError as err:
                self._reply(err.reply)
                return
            envelope = Envelope(sender, ret=params.ret, envid=params.envid)
            envelope.body = params.body or "7BIT"
            envelope.smtputf8 = params.smtputf8
            self._decide(
                MailFrom(sender, params),
                lambda reply: self._mail_accepted(envelope, reply),
                self._mail_rejected,
            )

    def _parse_mail(self, text: str):
        path, rest = address.split_path(text, address.SENDER_ERRORS)
        raw = self._esmtp_params(rest)
        params = address.mail_params(raw, self.config.max_message_size)
        sender = address.parse_path(path, address.SENDER_ERRORS, params.smtputf8)
        return sender, params

    def _esmtp_params(self, rest: str) -> dict[str, str | None]:
        raw = address.split_params(rest)
        if raw and not self.esmtp:
            name = next(iter(raw))
            raise AddressError(replies.UNKNOWN_PARAMETER.format(name=name))
        return raw

    def _mail_accepted(self, envelope: Envelope, reply: Reply | None) -> None:
        content = Content(self.config.max_message_size)
        self._txn = Transaction(envelope, content)
        self._reply(reply or replies.SENDER_OK)

    def _mail_rejected(self, reply: Reply) -> None:
        self._mail_refusal = reply
        self._reply(reply)

    def _cmd_rcpt(self, arg: str) -> None:
        txn = self._txn
        if txn is None:
            self._reply(self._mail_refusal or replies.NEED_MAIL)
        elif arg[:3].upper() != "TO:":
            self._reply(replies.RCPT_SYNTAX)
        elif len(txn.envelope.recipients) >= self.config.max_recipients:
            txn.overshoot += 1
            counts = txn.overshoot > self.config.max_recipients
            self._reply(replies.TOO_MANY_RECIPIENTS, counts=counts)
        else:
            try:
                recipient, params = self._parse_rcpt(arg[3:].lstrip(" "), txn)
            except AddressError as err:
                self._reply(err.reply)
                return
            self._decide(
                RcptTo(recipient.address, params),
                lambda reply: self._rcpt_accepted(txn, recipient, reply),
                self._reply,
            )

    def _parse_rcpt(self, text: str, txn: Transaction) -> tuple[Recipient, RcptParams]:
        path, rest = address.split_path(text, address.RECIPIENT_ERRORS)
        params = address.rcpt_params(self._esmtp_params(rest))
        mailbox = address.parse_recipient(
            path, txn.envelope.smtputf8, self.config.postmaster
        )
        return Recipient(mailbox, params.notify, params.orcpt), params

    def _rcpt_accepted(
        self, txn: Transaction, recipient: Recipient, reply: Reply | None
    ) -> None:
        txn.envelope.recipients.append(recipient)
        self._reply(reply or replies.RECIPIENT_OK)

    def _cmd_data(self, arg: str) -> None:
        txn = self._txn
        refusal = self._transaction_refusal(txn)
        if arg.strip(" "):
            self._reply(replies.NO_ARGUMENTS)
        elif refusal is not None or txn is None:
            self._reply(refusal or replies.NEED_MAIL)
        elif txn.chunking:
            self._reply(replies.DATA_AFTER_BDAT)
        else:
            self._decide(
                DataStart(txn.envelope, chunking=False),
                lambda reply: self._data_accepted(txn, reply),
                self._content_refused,
            )

    def _transaction_refusal(self, txn: Transaction | None) -> Reply | None:
        if self.helo is None:
            return replies.NEED_HELO
        if txn is None:
            return self._mail_refusal or replies.NEED_MAIL
        if not txn.envelope.recipients:
            return replies.NEED_RCPT
        return None

    def _data_accepted(self, txn: Transaction, reply: Reply | None) -> None:
        self._reply(reply or replies.START_DATA)
        self._mode = ReadData(txn)

    def _content_refused(self, reply: Reply) -> None:
        self._txn = None
        self._reply(reply)

    def _cmd_bdat(self, arg: str) -> None:
        parsed = _bdat_args(arg)
        if parsed is None:
            self._bdat_unsynced(replies.BDAT_SYNTAX)
            return
        size, last = parsed
        txn = self._txn
        refusal = self._transaction_refusal(txn)
        if not self.config.chunking:
            refusal = replies.NOT_IMPLEMENTED  # case 05: still read the chunk
        if refusal is not None or txn is None:
            self._mode = ReadChunk(size, last, size, refusal=refusal)
        elif txn.chunking:
            self._mode = ReadChunk(size, last, size, txn=txn)
        else:
            self._decide(
                DataStart(txn.envelope, chunking=True),
                lambda reply: self._bdat_accepted(txn, size, last),
                lambda reply: self._bdat_refused(size, last, reply),
            )

    def _bdat_accepted(self, txn: Transaction, size: int, last: bool) -> None:
        txn.chunking = True
        self._mode = ReadChunk(size, last, size, txn=txn)

    def _bdat_refused(self, size: int, last: bool, reply: Reply) -> None:
        self._txn = None
        self._mode = ReadChunk(size, last, size, refusal=reply)

    def _cmd_rset(self, arg: str) -> None:
        if arg.strip(" "):
            self._reply(replies.NO_ARGUMENTS)
            return
        self._txn = None
        self._mail_refusal = None
        self._reply(replies.OK)

    def _cmd_noop(self, arg: str) -> None:
        self._reply(replies.OK)

    def _cmd_vrfy(self, arg: str) -> None:
        # RFC 5321 3.5.3: 252, the relay confirms nothing about mailboxes.
        if arg.strip(" "):
            self._reply(replies.CANNOT_VRFY)
        else:
            self._reply(replies.VRFY_SYNTAX)

    def _cmd_help(self, arg: str) -> None:
        self._reply(replies.HELP)

    def _cmd_quit(self, arg: str) -> None:
        self._close("quit", replies.BYE)

    _STEPS: dict[type, Callable[[ServerConnection, Mode], bool]] = {
        Greeting: _step_greeting,
        Commands: _step_commands,
        SkipLine: _step_skip_line,
        Decide: _step_idle,
        ReadData: _step_data,
        SkipData: _step_skip_data,
        ReadChunk: _step_chunk,
        AwaitTLS: _step_idle,
        Closed: _step_idle,
    }


def _bdat_args(arg: str) -> tuple[int, bool] | None:
    """RFC 3030 2: ``chunk-size [ SP "LAST" ]``."""
    match = _BDAT_ARGS.fullmatch(arg.strip(" "))
    if match is None:
        return None
    return int(match.group(1)), match.group(2) is not None


S = ServerConnection
# verb, handler, allowed before TLS, counts toward the junk-command limit
COMMANDS: dict[str, Command] = {
    row.verb: row
    for row in (
        Command("EHLO", S._cmd_ehlo, True, False),
        Command("HELO", S._cmd_helo, True, False),
        Command("STARTTLS", S._cmd_starttls, True, False),
        Command("MAIL", S._cmd_mail, False, False),
        Command("RCPT", S._cmd_rcpt, False, False),
        Command("DATA", S._cmd_data, False, False),
        Command("BDAT", S._cmd_bdat, False, False),
        Command("RSET", S._cmd_rset, True, True),
        Command("NOOP", S._cmd_noop, True, True),
        Command("VRFY", S._cmd_vrfy, False, True),
        Command("HELP", S._cmd_help, True, True),
        Command("QUIT", S._cmd_quit, True, False),
    )
}
del S
