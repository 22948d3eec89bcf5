"""SMTP client core, sans-IO: replies in, commands and events out.

How it works. The adapter (relay/delivery/session.py, or any other) owns the
socket and the TLS handshake; this module owns the dialogue:

    conn = ClientConnection(ClientConfig(helo_name="relay.example"))
    conn.receive_data(data)            # b"" = the peer closed
    event = conn.next_event()          # an Event, NEED_DATA or CLOSED
    out = conn.data_to_send()          # command bytes queued so far
    conn.tls_started(...)              # after a StartTLS event and handshake
    conn.send_message(message)         # after Ready: one mail transaction
    conn.quit()

Each command sent leaves a handler in a queue of replies we wait for; a reply
pops the oldest handler (RFC 2920 section 3.1: replies come in order). With
PIPELINING the MAIL, every RCPT and DATA go out in one write, otherwise one
at a time.

Standards: RFC 5321 (greeting, EHLO with HELO fallback, section 4.5.2
dot-stuffing, section 4.2 replies), RFC 3207 (STARTTLS), RFC 2920
(PIPELINING), RFC 1870 (SIZE), RFC 6152 (8BITMIME), RFC 6531 (SMTPUTF8),
RFC 3461 (DSN parameters, passed per recipient), RFC 3463 (enhanced codes).

What it must never do:
- act on a greeting before its final `220 ` line (case 16);
- keep any byte that arrived after the 220 reply to STARTTLS: those are
  plaintext a man in the middle may have injected (case 07, CVE-2011-0411);
- send anything but EHLO after a failed STARTTLS (it ends the session);
- write a command containing CR or LF, or content with a bare CR or LF, or a
  body line starting with "." unstuffed (cases 03 and 04);
- send 8-bit octets to a server without 8BITMIME (5.6.3, case 23), or an
  address or header that needs SMTPUTF8 to a server without it (5.6.7,
  case 22). It never converts or downgrades a message: the relay promises
  to pass content unchanged, so such a message fails instead.

It imports no asyncio, ssl, socket or logging.
"""

from __future__ import annotations

import enum
import functools
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

# RFC 5321 4.5.3.1.5 sets 512 octets for a reply line; be generous to the
# peer but bound the buffer.
MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 200

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")


class ProtocolError(Exception):
    """The server broke the protocol (malformed reply); the session is over."""


# -- replies -----------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One complete (possibly multi-line) reply."""

    code: int
    lines: tuple[str, ...] = ("",)

    @property
    def text(self) -> str:
        return " ".join(line.strip() for line in self.lines).strip()

    @property
    def enhanced(self) -> str:
        """The RFC 3463 status of the first line, or one made up from the code."""
        match = _ENHANCED.match(self.lines[0])
        if match and match.group(1) == str(self.code)[0]:
            return ".".join(match.groups())
        return f"{self.code // 100}.0.0"

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


def local_reply(code: int, text: str) -> Reply:
    return Reply(code, (text,))


# Replies this client makes up itself; the enhanced codes go into DSNs.
CONNECTION_LOST = local_reply(421, "4.4.2 Connection lost")
PROTOCOL_ERROR = local_reply(421, "4.5.0 Malformed reply from server")
TLS_NOT_OFFERED = local_reply(450, "4.7.4 TLS is required, but was not offered")
TLS_HANDSHAKE_FAILED = local_reply(421, "4.7.5 TLS handshake failed")
STARTTLS_REFUSED = local_reply(421, "4.7.0 STARTTLS refused; not sending plaintext")
NEEDS_8BITMIME = local_reply(
    554, "5.6.3 Conversion required but not supported: server lacks 8BITMIME"
)
NEEDS_SMTPUTF8 = local_reply(
    554, "5.6.7 SMTPUTF8 is required, but was not offered by host"
)
TOO_BIG = local_reply(552, "5.3.4 Message size exceeds fixed limit of server")
BARE_LINE_ENDING = local_reply(554, "5.6.0 Message content has a bare CR or LF")
CONTENT_CHANGED = local_reply(
    451, "4.3.0 Queued content changed while being sent; not ended"
)
BAD_SENDER = local_reply(553, "5.1.7 Sender address cannot be sent safely")
BAD_RECIPIENT = local_reply(553, "5.1.3 Recipient address cannot be sent safely")
BAD_PARAMETER = local_reply(554, "5.5.4 Envelope parameter cannot be sent safely")
NO_REPLY = local_reply(451, "4.3.0 No reply for this recipient")


class ReplyParser:
    """Collects bytes into complete replies (RFC 5321 4.2.1 multi-line form)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._code = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def discard(self) -> int:
        """Forget every byte not yet parsed; return how many there were."""
        dropped = len(self._buffer)
        self._buffer.clear()
        self._lines.clear()
        return dropped

    def next_reply(self) -> Reply | None:
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_REPLY_LINE:
                    raise ProtocolError("reply line too long")
                return None
            raw = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            reply = self._line(raw)
            if reply is not None:
                return reply

    def _line(self, raw: bytes) -> Reply | None:
        if len(raw) < 3 or not raw[:3].isdigit() or raw[3:4] not in (b"", b" ", b"-"):
            raise ProtocolError(f"malformed reply line {raw[:40]!r}")
        code = int(raw[:3])
        if not 200 <= code < 600 or (self._lines and code != self._code):
            raise ProtocolError(f"unexpected reply code {code}")
        self._code = code
        self._lines.append(raw[4:].decode("utf-8", "replace"))
        if len(self._lines) > MAX_REPLY_LINES:
            raise ProtocolError("reply has too many lines")
        if raw[3:4] == b"-":
            return None
        lines, self._lines = tuple(self._lines), []
        return Reply(code, lines)


@dataclass(frozen=True)
class Capabilities:
    """The EHLO keywords (upper case) and their parameters."""

    keywords: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_ehlo(cls, reply: Reply) -> Capabilities:
        found = {}
        for line in reply.lines[1:]:
            keyword, _, params = line.strip().partition(" ")
            if keyword:
                found[keyword.upper()] = params.strip()
        return cls(found)

    def __contains__(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords

    @property
    def size_limit(self) -> int:
        """RFC 1870 fixed limit; 0 means none declared."""
        value = self.keywords.get("SIZE", "")
        return int(value) if value.isascii() and value.isdigit() else 0


# -- TLS decision ------------------------------------------------------------


class TlsLevel(enum.Enum):
    """Postfix's words for how much TLS a destination needs."""

    NONE = "none"  # never STARTTLS
    MAY = "may"  # STARTTLS when offered, plaintext otherwise
    ENCRYPT = "encrypt"  # STARTTLS or no delivery


class TlsAction(enum.Enum):
    STARTTLS = "starttls"
    PLAINTEXT = "plaintext"
    DEFER = "defer"


# (level, STARTTLS offered) -> what to do after the plaintext EHLO.
TLS_ACTIONS = {
    (TlsLevel.NONE, False): TlsAction.PLAINTEXT,
    (TlsLevel.NONE, True): TlsAction.PLAINTEXT,
    (TlsLevel.MAY, False): TlsAction.PLAINTEXT,
    (TlsLevel.MAY, True): TlsAction.STARTTLS,
    (TlsLevel.ENCRYPT, False): TlsAction.DEFER,
    (TlsLevel.ENCRYPT, True): TlsAction.STARTTLS,
}


def tls_action(level: TlsLevel, starttls_offered: bool) -> TlsAction:
    return TLS_ACTIONS[(level, starttls_offered)]


# -- what we send ------------------------------------------------------------


@dataclass(frozen=True)
class OutboundRecipient:
    address: str
    notify: str | None = None  # RFC 3461, e.g. "FAILURE,DELAY"
    orcpt: str | None = None  # RFC 3461, "rfc822;xtext"


@dataclass(frozen=True)
class OutboundMessage:
    """One transaction: envelope and content (CRLF lines, not dot-stuffed).

    Content given as bytes is sent from memory. Content given as
    ContentFacts is streamed by the adapter: after the 354 the connection
    emits SendContent, and the adapter feeds send_content() chunk by chunk
    and calls end_content().
    """

    sender: str
    recipients: tuple[OutboundRecipient, ...]
    content: bytes | ContentFacts
    body: str = "7BIT"  # what the sender declared: 7BIT or 8BITMIME
    smtputf8: bool = False  # the sender declared SMTPUTF8
    ret: str | None = None
    envid: str | None = None

    @functools.cached_property
    def facts(self) -> ContentFacts:
        if isinstance(self.content, ContentFacts):
            return self.content
        return ContentFacts.of(self.content)


@dataclass(frozen=True)
class RecipientResult:
    recipient: OutboundRecipient
    reply: Reply
    # True when the reply came from the server, False when we made it up.
    remote: bool = True


def has_bare_line_ending(content: bytes) -> bool:
    crlf = content.count(b"\r\n")
    return content.count(b"\r") != crlf or content.count(b"\n") != crlf


def is_8bit(content: bytes) -> bool:
    return not content.isascii()


def header_block(content: bytes) -> bytes:
    end = content.find(b"\r\n\r\n")
    return content if end < 0 else content[: end + 2]


@dataclass(frozen=True)
class ContentFacts:
    """What the checks before MAIL need to know about a message's content.

    As OutboundMessage.content it stands for content the adapter streams
    itself after a SendContent event (a spool file read in chunks), so no
    message ever has to be held in memory whole.
    """

    size: int = 0
    eight_bit: bool = False
    bare_line_ending: bool = False
    header_size: int = 0  # octets of header_block()
    header_8bit: bool = False
    ends_with_crlf: bool = False

    @classmethod
    def of(cls, content: bytes) -> ContentFacts:
        scanner = ContentScanner()
        scanner.feed(content)
        return scanner.facts()


class ContentScanner:
    """ContentFacts of content fed in chunks of any size, in order.

    Each check looks back a few octets across the chunk boundary: a CRLF, or
    the blank line ending the header, may be split between two chunks.
    """

    def __init__(self) -> None:
        self._size = 0
        self._eight_bit = False
        self._cr = self._lf = self._crlf = 0
        self._tail = b""  # the last three octets seen
        self._header_size = -1  # -1 while the header has not ended
        self._header_8bit = False

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._eight_bit = self._eight_bit or not chunk.isascii()
        self._cr += chunk.count(b"\r")
        self._lf += chunk.count(b"\n")
        self._crlf += chunk.count(b"\r\n")
        if self._tail.endswith(b"\r") and chunk.startswith(b"\n"):
            self._crlf += 1
        if self._header_size < 0:
            self._scan_header(chunk)
        self._size += len(chunk)
        self._tail = (self._tail + chunk)[-3:]

    def _scan_header(self, chunk: bytes) -> None:
        window = self._tail + chunk
        end = window.find(b"\r\n\r\n")
        header = window if end < 0 else window[: end + 2]
        self._header_8bit = self._header_8bit or not header.isascii()
        if end >= 0:
            self._header_size = self._size - len(self._tail) + end + 2

    def facts(self) -> ContentFacts:
        header_size = self._header_size if self._header_size >= 0 else self._size
        return ContentFacts(
            size=self._size,
            eight_bit=self._eight_bit,
            bare_line_ending=not (self._cr == self._lf == self._crlf),
            header_size=header_size,
            header_8bit=self._header_8bit,
            ends_with_crlf=self._tail.endswith(b"\r\n"),
        )


def needs_smtputf8(message: OutboundMessage) -> bool:
    """RFC 6531: non-ASCII addresses, or UTF-8 headers the sender declared."""
    addresses = [message.sender] + [r.address for r in message.recipients]
    if not all(a.isascii() for a in addresses):
        return True
    return message.smtputf8 and message.facts.header_8bit


def dot_stuff(content: bytes) -> bytes:
    """RFC 5321 4.5.2: the DATA payload, stuffed and ending in CRLF.CRLF."""
    if content and not content.endswith(b"\r\n"):
        content += b"\r\n"
    stuffed = content.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


class DotStuffer:
    """dot_stuff() over content fed in chunks; the output is byte-identical.

    A line starting with "." may straddle two chunks (CR | LF "." or
    CR LF | "."), so a trailing CR or CRLF is held back until the next chunk
    shows what follows it.
    """

    def __init__(self) -> None:
        self._held = b""
        self._started = False
        self._last2 = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._held + chunk
        if not data:
            return b""
        self._last2 = (self._last2 + chunk)[-2:]
        keep = 2 if data.endswith(b"\r\n") else int(data.endswith(b"\r"))
        self._held = data[len(data) - keep :]
        out = data[: len(data) - keep].replace(b"\r\n.", b"\r\n..")
        if not self._started and out:
            self._started = True
            if out.startswith(b"."):
                out = b"." + out
        return out

    def finish(self) -> bytes:
        """The held octets, a final CRLF when missing, and the terminator."""
        out = self._held
        self._started = self._started or bool(out)
        if self._started and self._last2 != b"\r\n":
            out += b"\r\n"
        self._held = b""
        return out + b".\r\n"


_NOTIFY = {"NEVER", "SUCCESS", "FAILURE", "DELAY"}


def safe_address(address: str) -> bool:
    """No control characters (CR, LF above all) and no angle brackets."""
    return not any(ord(c) < 32 or c in "<>\x7f" for c in address)


def safe_xtext(value: str) -> bool:
    """RFC 3461 4: xtext is printable ASCII without "=" or space."""
    return bool(value) and all(33 <= ord(c) <= 126 and c != "=" for c in value)


def safe_notify(value: str) -> bool:
    items = value.upper().split(",")
    return all(i in _NOTIFY for i in items) and (
        "NEVER" not in items or len(items) == 1
    )


def rcpt_params(recipient: OutboundRecipient, dsn: bool) -> list[str] | None:
    """RCPT parameters, or None when one cannot be sent safely."""
    if not dsn:
        return []
    params = []
    if recipient.notify is not None:
        if not safe_notify(recipient.notify):
            return None
        params.append(f"NOTIFY={recipient.notify.upper()}")
    if recipient.orcpt is not None:
        if not safe_xtext(recipient.orcpt) or ";" not in recipient.orcpt:
            return None
        params.append(f"ORCPT={recipient.orcpt}")
    return params


def local_failure(message: OutboundMessage, caps: Capabilities) -> Reply | None:
    """A reason to fail the whole message without talking to the server."""
    facts = message.facts
    checks: list[tuple[bool, Reply]] = [
        (facts.bare_line_ending, BARE_LINE_ENDING),
        (not safe_address(message.sender), BAD_SENDER),
        (facts.eight_bit and "8BITMIME" not in caps, NEEDS_8BITMIME),
        (needs_smtputf8(message) and "SMTPUTF8" not in caps, NEEDS_SMTPUTF8),
        (0 < caps.size_limit < facts.size, TOO_BIG),
    ]
    for failed, reply in checks:
        if failed:
            return reply
    return None


def mail_params(message: OutboundMessage, caps: Capabilities) -> list[str] | None:
    """MAIL parameters for this server, or None when one is unsafe."""
    params = []
    if caps.size_limit or "SIZE" in caps:
        params.append(f"SIZE={message.facts.size}")
    eight = message.facts.eight_bit or message.body.upper() == "8BITMIME"
    if eight and "8BITMIME" in caps:
        params.append("BODY=8BITMIME")
    if (message.smtputf8 or needs_smtputf8(message)) and "SMTPUTF8" in caps:
        params.append("SMTPUTF8")
    if "DSN" in caps:
        if message.ret is not None:
            if message.ret.upper() not in ("FULL", "HDRS"):
                return None
            params.append(f"RET={message.ret.upper()}")
        if message.envid is not None:
            if not safe_xtext(message.envid):
                return None
            params.append(f"ENVID={message.envid}")
    return params


# -- events ------------------------------------------------------------------


class Event:
    pass


@dataclass(frozen=True)
class Ready(Event):
    """The session became usable (once per session, after EHLO/TLS).

    From then on send_message() or quit() may be called whenever `state` is
    READY; a finished transaction returns to READY without another event.
    """

    capabilities: Capabilities
    tls: bool


@dataclass(frozen=True)
class StartTLS(Event):
    """Flush data_to_send(), do the TLS handshake, then call tls_started()."""


@dataclass(frozen=True)
class SendContent(Event):
    """The server said 354 to streamed content (OutboundMessage.content is
    ContentFacts): call send_content() with each chunk, then end_content().
    Replies are not parsed meanwhile."""


@dataclass(frozen=True)
class TransactionDone(Event):
    """Every recipient of the transaction has its reply."""

    results: tuple[RecipientResult, ...]


@dataclass(frozen=True)
class SessionFailed(Event):
    """The session cannot go on; close the connection."""

    reply: Reply
    remote: bool


class _Sentinel(Event):
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")
CLOSED = _Sentinel("CLOSED")


class State(enum.Enum):
    GREETING = "greeting"
    HELLO = "hello"
    STARTTLS = "starttls"
    HANDSHAKE = "handshake"
    READY = "ready"
    TRANSACTION = "transaction"
    CONTENT = "content"  # streaming content after 354
    QUIT = "quit"
    CLOSED = "closed"


@dataclass(frozen=True)
class ClientConfig:
    helo_name: str
    tls_level: TlsLevel = TlsLevel.MAY


Handler = Callable[[Reply], None]


@dataclass
class _Transaction:
    """The open transaction: its message and the replies gathered so far."""

    message: OutboundMessage
    to_send: list[OutboundRecipient]
    results: dict[int, RecipientResult] = field(default_factory=dict)
    accepted: list[OutboundRecipient] = field(default_factory=list)
    mail_reply: Reply | None = None
    rcpt_replies: int = 0


class ClientConnection:
    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.state = State.GREETING
        self.capabilities = Capabilities()
        self.tls = False
        self.discarded_after_starttls = 0
        self._parser = ReplyParser()
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._waiting: deque[Handler] = deque([self._on_greeting])
        self._unsent: deque[tuple[bytes, Handler]] = deque()
        self._tx: _Transaction | None = None
        self._needs_rset = False
        self._stuffer = DotStuffer()
        self._scanner = ContentScanner()

    # -- the adapter's side --------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if self.state is State.CLOSED:
            return
        if self.state is State.HANDSHAKE:
            # RFC 3207 5: nothing received before the handshake counts.
            self.discarded_after_starttls += len(data)
            return
        if not data:
            self._lost(CONNECTION_LOST, remote=False)
            return
        self._parser.feed(data)
        self._drain_replies()

    def next_event(self) -> Event:
        if self._events:
            return self._events.popleft()
        return CLOSED if self.state is State.CLOSED else NEED_DATA

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def tls_started(self) -> None:
        """The handshake succeeded: start over with a fresh EHLO (RFC 3207 4.2)."""
        if self.state is not State.HANDSHAKE:
            raise RuntimeError("tls_started() outside a STARTTLS handshake")
        self.tls = True
        self.capabilities = Capabilities()
        self._parser = ReplyParser()
        self._ehlo()

    def send_message(self, message: OutboundMessage) -> None:
        if self.state is not State.READY:
            raise RuntimeError(f"send_message() in state {self.state.value}")
        self.state = State.TRANSACTION
        tx = _Transaction(message, [])
        self._tx = tx
        failure = local_failure(message, self.capabilities)
        params = mail_params(message, self.capabilities)
        if failure is None and params is None:
            failure = BAD_PARAMETER
        if failure is not None:
            self._finish_all(failure, remote=False)
            return
        self._plan_recipients(tx)
        if not tx.to_send:
            self._finish()
            return
        if self._needs_rset:
            self._command("RSET", self._on_rset)
        mail = _join(f"MAIL FROM:<{message.sender}>", params)
        self._command(mail, self._on_mail)
        dsn = "DSN" in self.capabilities
        for rcpt in tx.to_send:
            line = _join("RCPT TO:<" + rcpt.address + ">", rcpt_params(rcpt, dsn))
            self._command(line, self._on_rcpt)
        self._command("DATA", self._on_data)
        self._pump()

    def send_content(self, chunk: bytes) -> None:
        """The next chunk of streamed content (after SendContent)."""
        if self.state is not State.CONTENT:
            raise RuntimeError(f"send_content() in state {self.state.value}")
        self._scanner.feed(chunk)
        self._out += self._stuffer.feed(chunk)

    def end_content(self) -> None:
        """All content was fed: send the end of data and await the reply.

        Content that differs from the facts checked before MAIL (a spool
        file changed under us) is never ended: the session fails without
        the terminating dot, so the server discards what it got.
        """
        if self.state is not State.CONTENT:
            raise RuntimeError(f"end_content() in state {self.state.value}")
        if self._scanner.facts() != self._transaction().message.facts:
            self.abort_content(CONTENT_CHANGED)
            return
        self._out += self._stuffer.finish()
        self._waiting.append(self._on_data_end)
        self.state = State.TRANSACTION
        self._drain_replies()

    def abort_content(self, reply: Reply) -> None:
        """Streaming cannot go on (the adapter could not read the content):
        nothing more is sent, not even the terminator; the session ends."""
        if self.state is not State.CONTENT:
            raise RuntimeError(f"abort_content() in state {self.state.value}")
        self._out.clear()
        self._lost(reply, remote=False)

    def quit(self) -> None:
        if self.state in (State.CLOSED, State.QUIT):
            return
        self.state = State.QUIT
        self._unsent.clear()
        self._command("QUIT", self._on_quit)
        self._pump()

    # -- plumbing ------------------------------------------------------------

    def _command(self, line: str, handler: Handler) -> None:
        data = line.encode("utf-8")
        if b"\r" in data or b"\n" in data:
            raise ValueError("refusing to send a command containing CR or LF")
        self._unsent.append((data + b"\r\n", handler))

    def _pump(self) -> None:
        pipelining = "PIPELINING" in self.capabilities
        while self._unsent and (pipelining or not self._waiting):
            data, handler = self._unsent.popleft()
            self._out += data
            self._waiting.append(handler)

    def _drain_replies(self) -> None:
        while self.state not in (State.HANDSHAKE, State.CONTENT, State.CLOSED):
            try:
                reply = self._parser.next_reply()
            except ProtocolError:
                self._lost(PROTOCOL_ERROR, remote=False)
                return
            if reply is None:
                return
            if not self._waiting:
                self._lost(PROTOCOL_ERROR, remote=False)
                return
            handler = self._waiting.popleft()
            if reply.code == 421 and handler != self._on_quit:
                self._lost(reply, remote=True)
                return
            handler(reply)
            self._pump()

    def _lost(self, reply: Reply, remote: bool) -> None:
        """The session ends now; an open transaction's open recipients get REPLY."""
        quitting = self.state is State.QUIT
        self._close()
        if quitting and not remote:
            return
        if self._tx is not None:
            self._finish_all(reply, remote)
        self._events.append(SessionFailed(reply, remote))

    def _close(self) -> None:
        self.state = State.CLOSED
        self._waiting.clear()
        self._unsent.clear()

    # -- greeting, EHLO, STARTTLS ---------------------------------------------

    def _on_greeting(self, reply: Reply) -> None:
        # The parser only returns a reply at its final "220 " line (case 16).
        if reply.code != 220:
            self._lost(reply, remote=True)
            return
        self._ehlo()

    def _ehlo(self) -> None:
        self.state = State.HELLO
        self._command(f"EHLO {self.config.helo_name}", self._on_ehlo)
        self._pump()

    def _on_ehlo(self, reply: Reply) -> None:
        if reply.code == 250:
            self._hello_done(Capabilities.from_ehlo(reply))
        elif reply.permanent:
            # RFC 5321 3.2: a server without EHLO gets HELO.
            self._command(f"HELO {self.config.helo_name}", self._on_helo)
        else:
            self._lost(reply, remote=True)

    def _on_helo(self, reply: Reply) -> None:
        if reply.code == 250:
            self._hello_done(Capabilities())
        else:
            self._lost(reply, remote=True)

    def _hello_done(self, caps: Capabilities) -> None:
        self.capabilities = caps
        if self.tls:
            self._ready()
            return
        action = tls_action(self.config.tls_level, "STARTTLS" in caps)
        if action is TlsAction.STARTTLS:
            self.state = State.STARTTLS
            self._command("STARTTLS", self._on_starttls)
        elif action is TlsAction.DEFER:
            self._lost(TLS_NOT_OFFERED, remote=False)
        else:
            self._ready()

    def _on_starttls(self, reply: Reply) -> None:
        if reply.code != 220:
            self._lost(STARTTLS_REFUSED, remote=False)
            return
        # Case 07: whatever followed the 220 was never protected by TLS.
        self.discarded_after_starttls += self._parser.discard()
        self.state = State.HANDSHAKE
        self._events.append(StartTLS())

    def _ready(self) -> None:
        self.state = State.READY
        self._events.append(Ready(self.capabilities, self.tls))

    def _on_quit(self, reply: Reply) -> None:
        self._close()

    def _on_rset(self, reply: Reply) -> None:
        if reply.code != 250:
            self._lost(reply, remote=True)
        self._needs_rset = False

    # -- the transaction -----------------------------------------------------

    def _plan_recipients(self, tx: _Transaction) -> None:
        dsn = "DSN" in self.capabilities
        for index, rcpt in enumerate(tx.message.recipients):
            safe = safe_address(rcpt.address) and rcpt_params(rcpt, dsn) is not None
            if safe:
                tx.to_send.append(rcpt)
            else:
                tx.results[index] = RecipientResult(rcpt, BAD_RECIPIENT, False)

    def _on_mail(self, reply: Reply) -> None:
        tx = self._transaction()
        tx.mail_reply = reply
        if reply.positive:
            self._needs_rset = True
            return
        if "PIPELINING" not in self.capabilities:
            # Nothing else of this transaction was sent.
            self._unsent.clear()
            self._finish_all(reply, remote=True)

    def _on_rcpt(self, reply: Reply) -> None:
        tx = self._transaction()
        rcpt = tx.to_send[tx.rcpt_replies]
        tx.rcpt_replies += 1
        mail_ok = tx.mail_reply is not None and tx.mail_reply.positive
        if mail_ok and reply.positive:
            tx.accepted.append(rcpt)
        elif mail_ok:
            self._set(rcpt, reply, remote=True)
        last = tx.rcpt_replies == len(tx.to_send)
        if last and not tx.accepted and "PIPELINING" not in self.capabilities:
            self._unsent.clear()
            self._finish()

    def _on_data(self, reply: Reply) -> None:
        tx = self._transaction()
        mail_ok = tx.mail_reply is not None and tx.mail_reply.positive
        if reply.code == 354 and mail_ok and tx.accepted:
            self._send_content(tx.message.content)
            return
        if reply.code == 354:
            # RFC 2920 3.1: DATA accepted with no recipient; end it at once.
            self._out += b".\r\n"
            self._waiting.append(lambda _reply: self._end_without_data())
            return
        if not mail_ok:
            self._end_without_data()
            return
        for rcpt in tx.accepted:
            self._set(rcpt, reply, remote=True)
        self._finish()

    def _send_content(self, content: bytes | ContentFacts) -> None:
        if isinstance(content, bytes):
            self._out += dot_stuff(content)
            self._waiting.append(self._on_data_end)
            return
        self.state = State.CONTENT
        self._stuffer = DotStuffer()
        self._scanner = ContentScanner()
        self._events.append(SendContent())

    def _end_without_data(self) -> None:
        tx = self._transaction()
        if tx.mail_reply is not None and not tx.mail_reply.positive:
            self._finish_all(tx.mail_reply, remote=True)
        else:
            self._finish()

    def _on_data_end(self, reply: Reply) -> None:
        tx = self._transaction()
        for rcpt in tx.accepted:
            self._set(rcpt, reply, remote=True)
        self._needs_rset = False
        self._finish()

    def _transaction(self) -> _Transaction:
        if self._tx is None:
            raise RuntimeError("transaction reply outside a transaction")
        return self._tx

    def _set(self, rcpt: OutboundRecipient, reply: Reply, remote: bool) -> None:
        tx = self._transaction()
        for index, candidate in enumerate(tx.message.recipients):
            if candidate is rcpt and index not in tx.results:
                tx.results[index] = RecipientResult(rcpt, reply, remote)
                return

    def _finish_all(self, reply: Reply, remote: bool) -> None:
        """Give REPLY to every recipient that has no result yet, then finish."""
        tx = self._transaction()
        for index, rcpt in enumerate(tx.message.recipients):
            if index not in tx.results:
                tx.results[index] = RecipientResult(rcpt, reply, remote)
        self._finish()

    def _finish(self) -> None:
        tx = self._transaction()
        for index, rcpt in enumerate(tx.message.recipients):
            if index not in tx.results:
                # Unreachable by the dialogue above; defer rather than guess.
                tx.results[index] = RecipientResult(rcpt, NO_REPLY, False)
        results = tuple(tx.results[i] for i in sorted(tx.results))
        self._tx = None
        self._events.append(TransactionDone(results))
        if self.state is State.TRANSACTION:
            self.state = State.READY


def _join(command: str, params: list[str] | None) -> str:
    return " ".join([command, *(params or [])])
