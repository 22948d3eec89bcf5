"""A small blocking SMTP dialogue for probe and check: one command at a time.

The customer tools ask a server a few questions (greeting, EHLO, STARTTLS,
one MAIL FROM, RSET, QUIT) and report the answers, so a plain socket with a
timeout is enough; mail delivery uses the sans-IO core in smtp/client.py.

Standards: RFC 5321 section 4.2 (replies: `DDD-` continues, `DDD ` ends),
section 4.3.1 (the greeting may span lines: wait for the final `220 `),
RFC 3207 section 4.2 (after the 220 reply to STARTTLS the client starts the
handshake; anything the server sent after that reply in plaintext is
discarded, case 07 / CVE-2011-0411).

It never sends a command containing CR or LF, never reads an unbounded
reply, and never continues in plaintext after a failed STARTTLS.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import ssl
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_LINE = 4096  # RFC 5321 4.5.3.1.5 says 512; be lenient, but bounded
MAX_LINES = 200
_LINE = re.compile(rb"^(\d{3})([ -]?)(.*)$")


class DialogueError(Exception):
    """The server broke the protocol, closed, or did not answer in time."""

    def __init__(self, message: str, code: str = "session-failed") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines).strip()

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


class Dialogue:
    """One SMTP session over a connected socket (plain or TLS)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket = sock
        self._buffer = b""
        # Plaintext bytes that followed the 220 to STARTTLS, thrown away.
        self.discarded_after_starttls = b""

    @classmethod
    def connect(
        cls,
        address: str,
        port: int,
        timeout_s: float = 30.0,
        source_ip: str | None = None,
    ) -> Dialogue:
        source = (source_ip, 0) if source_ip else None
        try:
            sock = socket.create_connection(
                (address, port), timeout=timeout_s, source_address=source
            )
        except OSError as exc:
            raise DialogueError(
                f"cannot connect to {address}:{port}: {exc}", "connect-failed"
            ) from exc
        return cls(sock)

    def close(self) -> None:
        self.sock.close()

    def _read_line(self) -> bytes:
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_LINE:
                raise DialogueError("reply line too long")
            try:
                data = self.sock.recv(4096)
            except (OSError, ssl.SSLError) as exc:
                raise DialogueError(f"connection failed: {exc}") from exc
            if not data:
                raise DialogueError("the server closed the connection")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.rstrip(b"\r")

    def read_reply(self) -> Reply:
        """Read lines up to the last one (`DDD ` or bare `DDD`) of a reply."""
        lines: list[str] = []
        code = 0
        for _ in range(MAX_LINES):
            raw = self._read_line()
            match = _LINE.match(raw)
            if not match or (lines and int(match[1]) != code):
                raise DialogueError(f"malformed reply line {raw[:80]!r}")
            code = int(match[1])
            lines.append(match[3].decode("utf-8", "replace"))
            if match[2] != b"-":
                log.debug("S: %d %s", code, lines[-1])
                return Reply(code, tuple(lines))
        raise DialogueError("reply has too many lines")

    def command(self, line: str) -> Reply:
        if "\r" in line or "\n" in line:
            raise ValueError("a command must not contain CR or LF")
        log.debug("C: %s", line)
        try:
            self.sock.sendall(line.encode("utf-8") + b"\r\n")
        except OSError as exc:
            raise DialogueError(f"connection failed: {exc}") from exc
        return self.read_reply()

    def starttls(self, context: ssl.SSLContext, server_name: str) -> Reply:
        """Send STARTTLS; on 220 drop buffered plaintext and do the handshake."""
        reply = self.command("STARTTLS")
        if reply.code != 220:
            return reply
        self.discarded_after_starttls = self._buffer
        self._buffer = b""
        self.start_tls(context, server_name)
        return reply

    def start_tls(self, context: ssl.SSLContext, server_name: str) -> None:
        hostname = None if _is_ip(server_name) else server_name
        try:
            self.sock = context.wrap_socket(self.sock, server_hostname=hostname)
        except ssl.SSLCertVerificationError as exc:
            raise DialogueError(exc.verify_message, "cert-verify-failed") from exc
        except (OSError, ssl.SSLError) as exc:
            raise DialogueError(
                f"TLS handshake failed: {exc}", "tls-handshake-failed"
            ) from exc

    def quit(self) -> None:
        """Say goodbye politely; a server that already left is fine too."""
        try:
            self.command("QUIT")
        except DialogueError:
            pass
        self.close()


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
