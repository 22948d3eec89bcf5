"""Run a real tlsrelay node in tests, and talk SMTP to it over real sockets.

    node = Node.create(tmp_path, routes={"example.net": "127.0.0.1:2525"})
    node.start()                      # `tlsrelay -c ... serve` as a subprocess
    node.publish(allowed=["127.0.0.1"])
    with node.connect() as smtp:      # submission port, plaintext first
        smtp.expect(220)
        smtp.command("EHLO client.example", 250)
        smtp.starttls(node.client_context())
    node.stop()

`Node.create` writes a config in a temp directory: a trustme CA and a
certificate for the node's host name, free loopback ports for submission and
smtps, a spool, an SQLite store and any delivery routes. `start` waits until
serve prints that it runs (all workers listen). By default the control
process is left out (`serve --without control`) so `publish` can write the
filtering-list snapshot directly; pass control=True to run it and use
`allow_add` (the CLI, through the store) instead.

On failure the node's log and directory stay where `describe()` says; `stop`
prints that line, which pytest shows for failing tests only.

Nothing here sleeps for a fixed time: waits poll with a bounded deadline.
Every process started here is stopped by its pid.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from tlsrelay.relay import access

HOSTNAME = "lon-tls.relay.example"
LOCATION = "LON"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
READY_TEXT = "is running"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.02):
    """Poll PREDICATE until it returns something true, or fail after TIMEOUT_S."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f'"{k}" = {_toml_value(v)}' for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"no TOML for {value!r}")


def write_config(path: Path, sections: dict[str, dict[str, object]]) -> None:
    lines = []
    for section, table in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(v)}" for key, v in table.items())
        lines.append("")
    path.write_text("\n".join(lines))


@dataclass
class Node:
    dir: Path
    ca: trustme.CA
    submission_port: int
    smtps_port: int
    control: bool = False
    host: str = "127.0.0.1"
    hostname: str = HOSTNAME
    location: str = LOCATION
    proc: subprocess.Popen[bytes] | None = None
    snapshot_version: int = 0
    _log_file: object = field(default=None, repr=False)

    @classmethod
    def create(
        cls,
        tmp_path: Path,
        *,
        routes: dict[str, str] | None = None,
        workers: int = 1,
        control: bool = False,
        overrides: dict[str, dict[str, object]] | None = None,
    ) -> Node:
        """Write a node's config, certificate and directories under TMP_PATH."""
        base = tmp_path / "node"
        base.mkdir()
        ca = trustme.CA()
        cert = ca.issue_cert(HOSTNAME, "localhost", "127.0.0.1")
        cert.cert_chain_pems[0].write_to_path(base / "cert.pem")
        for extra in cert.cert_chain_pems[1:]:
            extra.write_to_path(base / "cert.pem", append=True)
        cert.private_key_pem.write_to_path(base / "key.pem")
        (base / "spool").mkdir()  # serve refuses a missing spool, as init makes it
        node = cls(base, ca, free_port(), free_port(), control=control)
        sections: dict[str, dict[str, object]] = {
            "node": {"name": "lon-test", "location": LOCATION, "hostname": HOSTNAME},
            "listen": {
                "submission": [f"127.0.0.1:{node.submission_port}"],
                "smtps": [f"127.0.0.1:{node.smtps_port}"],
                "workers": workers,
            },
            "tls": {"cert": "cert.pem", "key": "key.pem"},
            "store": {"url": "sqlite:///control.db"},
            "spool": {"path": "spool", "min_free_bytes": 0},
            "delivery": {"routes": routes or {}, "minimal_backoff_s": 1.0},
            "control": {"allow_private_ips": True},
        }
        for section, table in (overrides or {}).items():
            sections.setdefault(section, {}).update(table)
        write_config(node.config_path, sections)
        return node

    # -- paths ---------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.dir / "tlsrelay.toml"

    @property
    def log_path(self) -> Path:
        return self.dir / "serve.log"

    @property
    def spool_path(self) -> Path:
        return self.dir / "spool"

    @property
    def snapshot_path(self) -> Path:
        return self.dir / "state" / f"access-{self.location}.json"

    def describe(self) -> str:
        return f"tlsrelay node in {self.dir}, log {self.log_path}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- process -------------------------------------------------------------

    def command(self) -> list[str]:
        """argv for a tlsrelay command against this node's config."""
        return [sys.executable, "-m", "tlsrelay.cli.main", "-c", str(self.config_path)]

    def start(self, *extra: str) -> None:
        """Start serve and wait until all its workers listen."""
        argv = self.command() + ["serve", *extra]
        if not self.control:
            argv += ["--without", "control"]
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while READY_TEXT not in self.log_text()[offset:]:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"serve exited with {self.proc.returncode}; {self.describe()}:\n"
                    + self.log_text()[-4000:]
                )
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"serve did not start; {self.describe()}")
            time.sleep(0.02)

    def stop(self) -> int | None:
        """SIGTERM serve and wait for it; returns its exit status."""
        print(self.describe())
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        status = self.proc.returncode
        self.proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return status

    def signal(self, signo: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signo)

    def child_pids(self) -> list[int]:
        """Pids of serve's children (workers, delivery, control)."""
        assert self.proc is not None
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()]

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- filtering list ------------------------------------------------------

    def publish(self, allowed=(), pending=()) -> None:
        """Write the location's snapshot as the control process would."""
        self.snapshot_version += 1
        access.publish(
            self.snapshot_path, self.location, allowed, pending, self.snapshot_version
        )

    def allow_add(self, ip: str) -> None:
        """`tlsrelay allow add` through the store (needs control=True to publish)."""
        subprocess.run(
            self.command() + ["allow", "add", self.location, ip],
            check=True,
            capture_output=True,
        )

    # -- clients -------------------------------------------------------------

    def client_context(self, **versions: ssl.TLSVersion) -> ssl.SSLContext:
        """A client context that trusts this node's CA."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ca.configure_trust(ctx)
        for attr, value in versions.items():
            setattr(ctx, attr, value)
        return ctx

    def connect(self, port: int | None = None, source: str = "") -> SmtpWire:
        return SmtpWire.connect(self.host, port or self.submission_port, source)

    def connect_tls(
        self, ctx: ssl.SSLContext | None = None, source: str = ""
    ) -> SmtpWire:
        wire = SmtpWire.connect(self.host, self.smtps_port, source)
        wire.wrap(ctx or self.client_context(), self.hostname)
        return wire

    def open_session(self, source: str = "", helo: str = "client.example") -> SmtpWire:
        """The preamble on the submission port: 220, EHLO, STARTTLS, EHLO."""
        wire = self.connect(source=source)
        try:
            wire.expect(220)
            wire.command(f"EHLO {helo}", 250)
            wire.starttls(self.client_context(), self.hostname)
            wire.command(f"EHLO {helo}", 250)
        except BaseException:
            wire.close()
            raise
        return wire

    # -- spool -------------------------------------------------------------

    def queued(self) -> list[str]:
        """Queue ids of the messages in the spool."""
        queue = self.spool_path / "queue"
        return sorted(p.stem for p in queue.glob("*.msg")) if queue.exists() else []

    def leftovers(self) -> list[str]:
        """Files in the spool's tmp/ (unfinished receptions)."""
        tmp = self.spool_path / "tmp"
        return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []

    def ports_free(self) -> bool:
        return all(_port_free(p) for p in (self.submission_port, self.smtps_port))


def _port_free(port: int) -> bool:
    with contextlib.closing(socket.socket()) as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def pid_gone(pid: int) -> bool:
    """True when PID no longer runs (or is a zombie of another parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


class SmtpWire:
    """A blocking SMTP client for dialogue tests: bytes exactly as written."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket = sock
        self.buffer = b""

    @classmethod
    def connect(
        cls, host: str, port: int, source: str = "", timeout_s: float = 10.0
    ) -> SmtpWire:
        """Connect, from SOURCE (another loopback address, say) when given."""
        address = (source, 0) if source else None
        return cls(
            socket.create_connection(
                (host, port), timeout=timeout_s, source_address=address
            )
        )

    def __enter__(self) -> SmtpWire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_reply(self) -> tuple[int, list[str]]:
        """(code, text lines) of the next reply; (0, []) when the peer closed."""
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return 0, lines
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            text = line.decode("utf-8", "replace")
            lines.append(text[4:])
            if len(text) < 4 or text[3] != "-":
                return int(text[:3]), lines

    def expect(self, code: int) -> list[str]:
        got, lines = self.read_reply()
        assert got == code, f"expected {code}, got {got} {lines}"
        return lines

    def command(self, line: str, code: int | None = None) -> tuple[int, list[str]]:
        self.send(line.encode() + b"\r\n")
        got, lines = self.read_reply()
        if code is not None:
            assert got == code, f"{line!r}: expected {code}, got {got} {lines}"
        return got, lines

    def wrap(self, ctx: ssl.SSLContext, hostname: str = HOSTNAME) -> None:
        assert not self.buffer, f"unread plaintext before TLS: {self.buffer!r}"
        self.sock = ctx.wrap_socket(self.sock, server_hostname=hostname)

    def starttls(self, ctx: ssl.SSLContext, hostname: str = HOSTNAME) -> None:
        self.command("STARTTLS", 220)
        self.wrap(ctx, hostname)

    def closed_by_peer(self) -> bool:
        """True when the peer has closed (reads EOF), without waiting long."""
        try:
            return self.sock.recv(1) == b""
        except (ConnectionError, ssl.SSLError):
            return True

    def send_message(
        self, sender: str, recipients: list[str], content: bytes
    ) -> tuple[int, list[str]]:
        """MAIL, RCPT..., DATA with dot-stuffed CONTENT; the final reply."""
        self.command(f"MAIL FROM:<{sender}>", 250)
        for rcpt in recipients:
            self.command(f"RCPT TO:<{rcpt}>", 250)
        self.command("DATA", 354)
        stuffed = content.replace(b"\r\n.", b"\r\n..")
        if stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        self.send(stuffed + b".\r\n")
        return self.read_reply()
