"""An in-memory SMTP peer that drives the server core, for the server tests.

``Peer`` feeds bytes to a ServerConnection, answers its decision events with
a policy (accept everything unless told otherwise), and collects the replies
and the messages that would be spooled.  The tests in this folder import it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tlsrelay.smtp import events, replies
from tlsrelay.smtp.events import CLOSED, NEED_DATA
from tlsrelay.smtp.server import ServerConfig, ServerConnection

HOST = "relay.example.net"
Policy = Callable[[object], "replies.Reply | None"]


def accept_all(event: object) -> replies.Reply | None:
    return None


@dataclass
class Message:
    envelope: events.Envelope
    content: bytes
    queue_id: str


@dataclass
class Peer:
    """A client session against a fresh core; ``policy`` answers decisions."""

    policy: Policy = accept_all
    config: dict = field(default_factory=dict)
    conn: ServerConnection = field(init=False)
    events: list = field(default_factory=list)
    queued: list[Message] = field(default_factory=list)
    aborted: list[events.MessageAborted] = field(default_factory=list)
    output: bytes = b""
    greet: bool = True
    _body: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        settings = {"hostname": HOST, "require_tls": False} | self.config
        self.conn = ServerConnection(ServerConfig(**settings))
        if self.greet:
            self.conn.send_greeting()
            self.output += self.conn.data_to_send()

    @property
    def closed(self) -> bool:
        return self.conn.state == "Closed"

    def send(self, data: bytes) -> list[str]:
        """Feed ``data`` (one segment); the replies it caused, as strings."""
        before = len(self.output)
        self.conn.receive_data(data)
        self.pump()
        return split_replies(self.output[before:])

    def pump(self) -> None:
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA or event is CLOSED:
                break
            self.events.append(event)
            self._handle(event)
        self.output += self.conn.data_to_send()

    def _handle(self, event: object) -> None:
        if isinstance(event, events.Body):
            self._body.append(event.data)
        elif isinstance(event, events.MessageAborted):
            self._body.clear()
            self.aborted.append(event)
        elif isinstance(event, events.StartTLS):
            self.output += self.conn.data_to_send()
            self.conn.tls_started()
        elif isinstance(event, events.MessageEnd):
            self._message_end(event)
        elif isinstance(event, events.MailFrom | events.RcptTo | events.DataStart):
            self._answer(event)

    def _answer(self, event: object) -> None:
        reply = self.policy(event)
        if reply is None:
            self.conn.accept()
        else:
            self.conn.reject(reply)

    def _message_end(self, event: events.MessageEnd) -> None:
        content = b"".join(self._body)
        self._body.clear()
        reply = self.policy(event)
        if reply is not None:
            self.conn.reject(reply)
            return
        queue_id = f"Q{len(self.queued) + 1}"
        self.queued.append(Message(event.envelope, content, queue_id))
        self.conn.accept_message(queue_id)


def split_replies(data: bytes) -> list[str]:
    """Replies as strings like str(Reply): lines joined by CRLF."""
    out, current = [], []
    for line in data.decode("utf-8").split("\r\n"):
        if not line:
            continue
        current.append(line)
        if len(line) < 4 or line[3] != "-":
            out.append("\r\n".join(current))
            current = []
    assert not current, f"unterminated reply {current!r}"
    return out


def ready(policy: Policy = accept_all, **config) -> Peer:
    """A peer that has sent EHLO (and the greeting was read)."""
    peer = Peer(policy=policy, config=config)
    peer.send(b"EHLO mail.example.com\r\n")
    return peer


def preamble(policy: Policy = accept_all, **config) -> Peer:
    """The cases' preamble: EHLO, STARTTLS, handshake, EHLO, on a 587 port."""
    settings = {"require_tls": True} | config
    peer = Peer(policy=policy, config=settings)
    peer.send(b"EHLO mail.example.com\r\n")
    assert peer.send(b"STARTTLS\r\n") == [str(replies.READY_TLS)]
    peer.send(b"EHLO mail.example.com\r\n")
    return peer


def codes(lines: list[str]) -> list[str]:
    """The code and enhanced status of each reply's last line."""
    return [" ".join(line.split("\r\n")[-1].split(" ")[:2]) for line in lines]


def test_peer_reads_greeting_and_ehlo():
    peer = ready()
    got = split_replies(peer.output)
    assert got[0] == str(replies.GREETING.format(hostname=HOST))
    assert got[1].startswith(f"250-{HOST}\r\n")
    assert got[1].endswith("\r\n250 STARTTLS")


def test_split_replies_keeps_multiline_together():
    data = b"250-a\r\n250-b\r\n250 c\r\n221 2.0.0 Bye\r\n"
    assert split_replies(data) == ["250-a\r\n250-b\r\n250 c", "221 2.0.0 Bye"]
