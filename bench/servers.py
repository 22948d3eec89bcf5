"""The processes under test: a private Postfix, a tlsrelay node and the sink.

Each class starts its processes in a directory of its own, says which pid
heads its process tree (for CPU and memory), how many messages wait in its
queue, and stops everything it started by pid. Postfix is a private instance
(`postfix -c DIR/etc`) built from the reference config in
../shared/bench/peers/, never the system's; the sink is Postfix's smtp-sink.

Only loopback addresses are used, ports are picked free at start, and this
module never signals a process it did not start.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PEERS = REPO.parent / "shared" / "bench" / "peers"
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    """True when something listens on 127.0.0.1:PORT (read from /proc)."""
    local = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        return any(
            fields[1] == local and fields[3] == "0A"
            for fields in (line.split() for line in f)
        )


def wait_until(predicate, timeout_s: float, what: str) -> None:
    """Poll PREDICATE every 20 ms until true; fail after TIMEOUT_S."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """True while PID exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def descendants(pid: int) -> list[int]:
    """Every live descendant of PID, from the ppid links in /proc."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    found, todo = [], list(kids.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(kids.get(child, []))
    return found


def end_process(proc: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the process we started, SIGKILL it (and what it left) if it lingers."""
    if proc.poll() is not None:
        return
    family = descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    for pid in family:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@dataclass(frozen=True)
class Certificate:
    """ECDSA P-256 leaf for 127.0.0.1/localhost, with its chain, for both servers."""

    chain: Path
    key: Path


def make_certificate(directory: Path) -> Certificate:
    import trustme

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    leaf = ca.issue_cert("localhost", HOST, key_type=trustme.KeyType.ECDSA)
    cert = Certificate(directory / "ec-chain.pem", directory / "ec-key.pem")
    cert.chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(cert.key))
    cert.key.chmod(0o644)  # Postfix reads it as root; the dir is private to us
    return cert


class Sink:
    """smtp-sink on a free port; `-c` prints running counters we parse."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.counter_file = directory / "sink.out"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        with open(self.counter_file, "wb") as out:
            self.proc = subprocess.Popen(
                ["smtp-sink", "-c", "-u", "nobody", f"{HOST}:{self.port}", "1024"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_until(lambda: listening(self.port), START_TIMEOUT_S, "smtp-sink")

    def delivered(self) -> int:
        """Messages the sink has received (the last `mesg=N` it printed)."""
        try:
            with open(self.counter_file, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 256))
                tail = f.read()
        except OSError:
            return 0
        counts = re.findall(rb"mesg=(\d+)", tail)
        return int(counts[-1]) if counts else 0

    def stop(self) -> None:
        if self.proc:
            end_process(self.proc, 5)
            self.proc = None


def _substitute(template: str, values: dict[str, str]) -> str:
    pattern = re.compile("|".join(re.escape(k) for k in sorted(values, key=len)[::-1]))
    return pattern.sub(lambda m: values[m.group(0)], template)


class Postfix:
    """A private Postfix instance: submission port with required STARTTLS."""

    name = "postfix"
    QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")

    def __init__(
        self, directory: Path, cert: Certificate, sink_port: int, process_limit: int
    ) -> None:
        self.dir = directory
        self.process_limit = process_limit
        self.etc = directory / "etc"
        self.cert = cert
        self.sink_port = sink_port
        self.port = 0
        self.pid = 0

    def _write_config(self) -> None:
        self.port = free_port()
        values = {
            "TLSDIR/ec-chain.pem": str(self.cert.chain),
            "TLSDIR/ec-key.pem": str(self.cert.key),
            "DIR": str(self.dir),
            "10025": str(self.sink_port),
            "10587": str(self.port),
        }
        main = _substitute((PEERS / "postfix-main.cf").read_text(), values)
        main += (
            "\n# bench/servers.py\nin_flow_delay = 0\n"
            f"default_process_limit = {self.process_limit}\n"
        )
        master = _substitute((PEERS / "postfix-master.cf").read_text(), values)
        (self.etc / "main.cf").write_text(main)
        (self.etc / "master.cf").write_text(master)

    def start(self) -> None:
        for sub in ("etc", "data", "queue"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        shutil.chown(self.dir / "data", "postfix")
        self._write_config()
        self._postfix("start")
        pid_file = self.dir / "queue" / "pid" / "master.pid"
        wait_until(pid_file.exists, START_TIMEOUT_S, "Postfix master.pid")
        self.pid = int(pid_file.read_text().split()[0])
        wait_until(lambda: listening(self.port), START_TIMEOUT_S, "Postfix smtpd")

    def _postfix(self, verb: str) -> None:
        done = subprocess.run(
            ["postfix", "-c", str(self.etc), verb],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode:
            log = (self.dir / "maillog").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"postfix {verb} failed: {done.stderr}\n{log}")

    def queue_length(self) -> int:
        root = self.dir / "queue"
        return sum(len(files) for q in self.QUEUES for _, _, files in os.walk(root / q))

    def stop(self) -> None:
        """`postfix stop`, then SIGKILL whatever of the instance is left."""
        if not self.pid:
            pid_file = self.dir / "queue" / "pid" / "master.pid"
            with contextlib.suppress(OSError, ValueError, IndexError):
                self.pid = int(pid_file.read_text().split()[0])
        if not self.pid:
            return
        family = [self.pid, *descendants(self.pid)]
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._postfix("stop")
        with contextlib.suppress(RuntimeError):
            wait_until(lambda: not alive(self.pid), STOP_TIMEOUT_S, "Postfix to stop")
        for pid in family:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.pid = 0

    @staticmethod
    def version() -> str:
        done = subprocess.run(
            ["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True
        )
        return done.stdout.strip() or "unknown"


TLSRELAY_CONFIG = """\
[node]
name = "bench-1"
location = "LON"
hostname = "localhost"
state_dir = "state"

[listen]
submission = ["{host}:{port}"]
workers = {workers}

[tls]
cert = "{chain}"
key = "{key}"

[store]
url = "sqlite:///control.db"

[spool]
path = "spool"
min_free_bytes = 0

[delivery]
routes = {{ "example.net" = "{host}:{sink_port}" }}

[control]
allow_private_ips = true
"""


class Tlsrelay:
    """A tlsrelay node (`tlsrelay -c CONFIG serve`) relaying to the sink."""

    name = "tlsrelay"

    def __init__(
        self,
        directory: Path,
        cert: Certificate,
        sink_port: int,
        workers: int = 0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.dir = directory
        self.cert = cert
        self.sink_port = sink_port
        self.workers = workers
        self.env = env or {}
        self.config = directory / "tlsrelay.toml"
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def _write_config(self) -> None:
        self.port = free_port()
        self.config.write_text(
            TLSRELAY_CONFIG.format(
                host=HOST,
                port=self.port,
                workers=self.workers,
                chain=self.cert.chain,
                key=self.cert.key,
                sink_port=self.sink_port,
            )
        )

    def _allow_loopback(self, exe: Path) -> None:
        """Let 127.0.0.0/8 relay: on the filtering list in the store (the
        control process republishes the snapshot from it) and in the
        snapshot itself, so the first session does not race the publisher."""
        from tlsrelay import config
        from tlsrelay.relay import access

        subprocess.run(
            [str(exe), "-c", str(self.config), "allow", "add", "LON", "127.0.0.0/8"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        settings = config.load(self.config)
        path = settings.snapshot_path(settings.node.location)
        access.publish(path, settings.node.location, ["127.0.0.0/8"], [], 1)

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "spool").mkdir(mode=0o700, exist_ok=True)  # serve wants it made
        self._write_config()
        exe = Path(sys.executable).with_name("tlsrelay")
        self._allow_loopback(exe)
        with open(self.dir / "serve.log", "wb") as log:
            self.proc = subprocess.Popen(
                [str(exe), "-c", str(self.config), "serve"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
            )
        wait_until(self._up, START_TIMEOUT_S, "tlsrelay serve to listen")

    def _up(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            log = (self.dir / "serve.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"tlsrelay serve exited {self.proc.returncode}:\n{log}")
        return listening(self.port)

    def queue_length(self) -> int:
        queue = self.dir / "spool" / "queue"
        try:
            return sum(1 for name in os.listdir(queue) if name.endswith(".msg"))
        except FileNotFoundError:
            return 0

    def stop(self) -> None:
        if self.proc:
            end_process(self.proc)
            self.proc = None
