"""Private Postfix instances and smtp-sink for the real-parts test tier.

Each `PostfixInstance` lives in one directory (mode 755) with its own
etc/main.cf, etc/master.cf (no chroot), queue, data, a mail log in the
directory (maillog_file + postlog service) and a mailbox file for mail the
instance delivers to itself. It is started with `postfix -c DIR/etc start`
and stopped with `postfix -c DIR/etc stop`; stopping waits until the master
and the daemons it had started are gone and kills leftovers of this
instance only, by pid. See ../shared/POSTFIX-TESTING.md for the pitfalls.

Roles:

- `customer()`: a customer's MTA relaying everything to tlsrelay
  (relayhost=[127.0.0.1]:PORT, smtp_tls_security_level=encrypt,
  smtp_bind_address=127.0.0.N). Its own domain `<name>.test` is delivered
  by the `virtual` agent to DIR/mail/mbox, so bounces to a local sender can
  be read with `mailbox()`.
- `destination()`: a receiving MTA on a loopback port that stores mail for
  its domains in DIR/mail/mbox.
- `SmtpSink`: Postfix's smtp-sink dumping each transaction to a file
  (`-d`), the cheapest destination; `messages()` parses the dumps.

Postfix runs its daemons as `postfix` and smtp-sink as `nobody`, who cannot
enter pytest's mode-700 tmp_path; each instance therefore lives in a
mode-755 directory under /tmp while it runs (tmp_path holds a symlink) and
is moved into tmp_path when stopped, logs and all.

Tests drive the instance with `sendmail()`, `flush()`, `queue()`,
`wait_for_log()` and read `maillog()`. Nothing here waits on a fixed sleep:
every wait polls with a deadline and fails naming the log to read.

Never aims traffic anywhere but loopback, and never signals a process it
did not start.
"""

from __future__ import annotations

import contextlib
import email
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from support.tools import need

MAILBOX_UID = 65534  # nobody: owner of mailbox files and smtp-sink dumps
POLL_S = 0.05
MESSAGE_SIZE_LIMIT = 50 * 1024 * 1024

# Unix services every instance needs; `chroot` is n throughout because a
# temp dir has none of the files a chroot jail needs.
_MASTER_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (for programs that need a number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout_s: float, what: str):
    """Poll PREDICATE until it returns a true value; fail after TIMEOUT_S."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s:.0f} s waiting for {what}"
            )
        time.sleep(POLL_S)


def listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie has exited; only its parent's wait() is missing.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children_of(pid: int) -> list[int]:
    """Pids whose parent is PID (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _make_dir(path: Path, mode: int = 0o755, owner: str | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    if owner:
        os.chown(path, *_ids(owner))
    return path


def _ids(owner: str) -> tuple[int, int]:
    entry = pwd.getpwnam(owner)
    return entry.pw_uid, entry.pw_gid


def reachable_dir(requested: Path, name: str) -> Path:
    """A mode-755 directory that Postfix's and smtp-sink's users can reach.

    pytest's tmp_path sits under mode-700 directories owned by root, which
    the `postfix` and `nobody` users cannot traverse. So the real directory
    is made under /tmp and REQUESTED becomes a symlink to it; `settle()`
    later moves it into place so a failing test leaves everything in its
    own tmp_path.
    """
    requested = Path(requested)
    requested.parent.mkdir(parents=True, exist_ok=True)
    real = Path(tempfile.mkdtemp(prefix=f"tlsrelay-{name}-", dir="/tmp"))
    real.chmod(0o755)
    requested.symlink_to(real)
    return real


def settle(real: Path, requested: Path) -> None:
    """Move REAL back to REQUESTED (replacing the symlink to it)."""
    if requested.is_symlink() and real.exists():
        requested.unlink()
        shutil.move(str(real), str(requested))


def split_mbox(text: bytes) -> list[bytes]:
    """Messages of an mbox file, each without its `From ` separator line."""
    messages: list[bytes] = []
    for chunk in re.split(rb"(?m)^From [^\n]*\n", text):
        if chunk.strip():
            messages.append(chunk)
    return messages


@dataclass
class PostfixInstance:
    """One private Postfix: DIR/etc, DIR/queue, DIR/data, DIR/maillog."""

    root: Path
    name: str
    params: dict[str, str] = field(default_factory=dict)
    listen: str | None = None  # "127.0.0.1:PORT" for an smtpd inet listener
    listen_options: dict[str, str] = field(default_factory=dict)
    extra_master: str = ""  # more master.cf services, e.g. a second smtp transport
    started: bool = False
    master_pid: int | None = None
    home: Path | None = None  # the real directory while running (see reachable_dir)

    # --- paths --------------------------------------------------------------

    @property
    def etc(self) -> Path:
        return (self.home or self.root) / "etc"

    @property
    def maillog_path(self) -> Path:
        return self.root / "maillog"

    @property
    def mailbox_path(self) -> Path:
        return self.root / "mail" / "mbox"

    @property
    def domain(self) -> str:
        """The instance's own mail domain, delivered to `mailbox_path`."""
        return f"{self.name}.test"

    @property
    def port(self) -> int:
        assert self.listen, "this instance has no inet listener"
        return int(self.listen.rsplit(":", 1)[1])

    # --- configuration --------------------------------------------------------

    def main_cf(self) -> dict[str, str]:
        root = str(self.home)
        cf = {
            "compatibility_level": "3.6",
            "config_directory": f"{root}/etc",
            "queue_directory": f"{root}/queue",
            "data_directory": f"{root}/data",
            "meta_directory": "/etc/postfix",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": self.domain,
            "mydomain": "test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "maillog_file": f"{root}/maillog",
            "maillog_file_prefixes": root,
            "biff": "no",
            "in_flow_delay": "0",
            "message_size_limit": str(MESSAGE_SIZE_LIMIT),
            "virtual_mailbox_limit": "0",
            "mailbox_size_limit": "0",
            "virtual_mailbox_domains": self.domain,
            "virtual_mailbox_base": f"{root}/mail",
            "virtual_mailbox_maps": "static:mbox",
            "virtual_uid_maps": f"static:{MAILBOX_UID}",
            "virtual_gid_maps": f"static:{MAILBOX_UID}",
            "smtp_tls_loglevel": "1",
            "smtpd_tls_loglevel": "1",
        }
        cf.update(self.params)
        return cf

    def master_cf(self) -> str:
        lines = []
        if self.listen:
            lines.append(f"{self.listen} inet n - n - - smtpd")
            for key, value in self.listen_options.items():
                lines.append(f"  -o {key}={value}")
        head = "\n".join(lines) + ("\n" if lines else "")
        return head + _MASTER_SERVICES + self.extra_master

    def write_config(self) -> None:
        self.home = home = reachable_dir(self.root, self.name)
        _make_dir(self.etc)
        _make_dir(home / "queue")
        _make_dir(home / "data", 0o700, owner="postfix")
        _make_dir(home / "mail", 0o755, owner="nobody")
        text = "".join(f"{k} = {v}\n" for k, v in self.main_cf().items())
        (self.etc / "main.cf").write_text(text)
        (self.etc / "master.cf").write_text(self.master_cf())

    # --- running --------------------------------------------------------------

    def _run(self, *argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, capture_output=True, timeout=60, **kw)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {proc.returncode}: "
                f"{proc.stderr.decode(errors='replace')}\nmaillog: {self.maillog_path}"
            )
        return proc

    def start(self) -> PostfixInstance:
        self.write_config()
        self.started = True
        try:
            self._run(need("postfix"), "-c", str(self.etc), "start")
        except BaseException:
            self.stop()
            raise
        pid_file = self.home / "queue" / "pid" / "master.pid"
        self.master_pid = int(
            wait_until(
                lambda: pid_file.exists() and pid_file.read_text().strip(),
                10,
                f"{pid_file}",
            )
        )
        if self.listen:
            host, port = self.listen.rsplit(":", 1)
            wait_until(
                lambda: listening(host, int(port)), 10, f"smtpd on {self.listen}"
            )
        return self

    def stop(self) -> None:
        """Stop this instance and make sure its master and daemons are gone."""
        if not self.started:
            return
        self.started = False
        pid_file = self.home / "queue" / "pid" / "master.pid"
        if not self.master_pid and pid_file.exists():
            with contextlib.suppress(ValueError):
                self.master_pid = int(pid_file.read_text().strip())
        pids = [self.master_pid] if self.master_pid else []
        if self.master_pid:
            pids += children_of(self.master_pid)
        self._run(need("postfix"), "-c", str(self.etc), "stop", check=False)
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        for pid in pids:
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        settle(self.home, self.root)
        self.home = None

    def __enter__(self) -> PostfixInstance:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- using it ---------------------------------------------------------------

    def sendmail(self, sender: str, recipients: Iterable[str], message: bytes) -> None:
        """Submit MESSAGE as the local `sendmail` does (pickup adds headers)."""
        argv = [need("sendmail"), "-C", str(self.etc), "-oi", "-f", sender, "--"]
        self._run(*argv, *recipients, input=message)

    def flush(self) -> None:
        """Retry deferred mail now (`postqueue -f`)."""
        self._run(need("postqueue"), "-c", str(self.etc), "-f")

    def queue(self) -> list[dict]:
        """The queue as `postqueue -j` reports it: one dict per message."""
        out = self._run(need("postqueue"), "-c", str(self.etc), "-j").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def maillog(self) -> str:
        try:
            return self.maillog_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout_s: float = 20) -> re.Match:
        """First match of the regex PATTERN in the mail log, waiting for it."""
        regex = re.compile(pattern, re.MULTILINE)
        return wait_until(
            lambda: regex.search(self.maillog()),
            timeout_s,
            f"/{pattern}/ in {self.maillog_path}",
        )

    def mailbox(self) -> list[bytes]:
        """Messages the instance delivered to its own domain (mbox order)."""
        try:
            return split_mbox(self.mailbox_path.read_bytes())
        except FileNotFoundError:
            return []

    def wait_for_mailbox(self, count: int, timeout_s: float = 20) -> list[bytes]:
        return wait_until(
            lambda: len(m := self.mailbox()) >= count and m,
            timeout_s,
            f"{count} message(s) in {self.mailbox_path}",
        )


def customer(
    root: Path,
    relay_port: int,
    ca_file: Path | str,
    bind_ip: str = "127.0.0.2",
    *,
    name: str = "customer",
    listen: bool = False,
    params: Mapping[str, str] | None = None,
    extra_master: str = "",
) -> PostfixInstance:
    """A customer's MTA that relays all mail through tlsrelay over TLS."""
    cf = {
        "relayhost": f"[127.0.0.1]:{relay_port}",
        "smtp_tls_security_level": "encrypt",
        "smtp_tls_CAfile": str(ca_file),
        "smtp_bind_address": bind_ip,
    }
    cf.update(params or {})
    return PostfixInstance(
        Path(root),
        name,
        cf,
        listen=f"127.0.0.1:{free_port()}" if listen else None,
        extra_master=extra_master,
    )


def destination(
    root: Path,
    domains: Iterable[str] = (),
    *,
    name: str = "destination",
    params: Mapping[str, str] | None = None,
) -> PostfixInstance:
    """A receiving MTA on a free loopback port; mail for DOMAINS (and its own
    domain) lands in `mailbox_path`."""
    inst = PostfixInstance(Path(root), name, listen=f"127.0.0.1:{free_port()}")
    cf = {
        "virtual_mailbox_domains": " ".join([inst.domain, *domains]),
        "smtpd_tls_security_level": "none",
        "mynetworks": "",
    }
    cf.update(params or {})
    inst.params = cf
    return inst


@dataclass
class SinkMessage:
    """One transaction as smtp-sink dumped it."""

    path: Path
    client_addr: str
    helo: str
    mail_from: str  # the MAIL FROM arguments, e.g. "<a@b.example> SIZE=123"
    rcpt_to: list[str]  # RCPT TO arguments, in order
    content: bytes  # header and body as received, LF line ends, unstuffed

    @property
    def sender(self) -> str:
        return _path_of(self.mail_from)

    @property
    def recipients(self) -> list[str]:
        return [_path_of(r) for r in self.rcpt_to]

    def message(self) -> email.message.Message:
        return email.message_from_bytes(self.content)


def _path_of(args: str) -> str:
    match = re.match(r"<([^>]*)>", args)
    return match.group(1) if match else args.split()[0]


def parse_dump(path: Path, data: bytes) -> SinkMessage:
    """Split an smtp-sink dump into its X- records and the message.

    The dump is: X-Client-Addr, X-Client-Proto, X-Helo-Args?, X-Mail-Args,
    X-Rcpt-Args*, a three-line Received: header of smtp-sink's own, the
    message as received, and one empty line that smtp-sink appends.
    """
    fields: dict[str, list[str]] = {}
    rest = data
    while rest.startswith(b"X-"):
        line, _, rest = rest.partition(b"\n")
        key, _, value = line.decode().partition(": ")
        fields.setdefault(key, []).append(value)
    received, _, rest = rest.partition(b"\n")
    assert received.startswith(b"Received: "), f"unexpected dump format in {path}"
    while rest.startswith(b"\t"):
        rest = rest.partition(b"\n")[2]
    assert rest.endswith(b"\n"), f"incomplete dump {path}"
    return SinkMessage(
        path=path,
        client_addr=fields["X-Client-Addr"][0],
        helo=fields.get("X-Helo-Args", [""])[0],
        mail_from=fields["X-Mail-Args"][0],
        rcpt_to=fields.get("X-Rcpt-Args", []),
        content=rest[:-1],
    )


class SmtpSink:
    """Postfix's smtp-sink on a free loopback port, one dump file per message.

    smtp-sink writes a dump while the message arrives, so a dump counts as
    complete only when it ends with the empty line smtp-sink appends and its
    size has not changed since the previous poll.
    """

    def __init__(
        self, root: Path, *, host: str = "127.0.0.1", extra: Iterable[str] = ()
    ):
        self.root = Path(root)
        self.host = host
        self.extra = list(extra)
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self._sizes: dict[Path, int] = {}
        self.home: Path | None = None

    @property
    def dumps(self) -> Path:
        return (self.home or self.root) / "dumps"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> SmtpSink:
        self.home = reachable_dir(self.root, "sink")
        _make_dir(self.dumps, 0o755, owner="nobody")
        for _attempt in range(5):
            self.port = free_port(self.host)
            argv = [need("smtp-sink"), "-u", "nobody", "-d", f"{self.dumps}/msg."]
            argv += [*self.extra, self.address, "256"]
            self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 10
            while self.proc.poll() is None and time.monotonic() < deadline:
                if listening(self.host, self.port):
                    return self
                time.sleep(POLL_S)
            self._kill()  # port taken by someone else in the meantime: retry
        raise AssertionError(f"smtp-sink did not start on {self.host}")

    def _kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        if self.proc:
            self.proc.wait(10)
            if self.proc.stderr:
                self.proc.stderr.close()

    def stop(self) -> None:
        """Stop smtp-sink and move its dumps into the requested directory."""
        self._kill()
        if self.home:
            settle(self.home, self.root)
            self.home = None
            self._sizes.clear()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def messages(self, where=None) -> list[SinkMessage]:
        """Complete dumps so far, oldest first; only those WHERE(m) accepts."""
        done = []
        for path in sorted(self.dumps.glob("msg.*"), key=lambda p: p.stat().st_mtime):
            data = path.read_bytes()
            stable = self._sizes.get(path) == len(data)
            self._sizes[path] = len(data)
            if stable and data.endswith(b"\n\n"):
                message = parse_dump(path, data)
                if where is None or where(message):
                    done.append(message)
        return done

    def wait_for(
        self, count: int, timeout_s: float = 30, where=None
    ) -> list[SinkMessage]:
        """At least COUNT complete messages (that WHERE accepts), waiting for them."""
        return wait_until(
            lambda: len(m := self.messages(where)) >= count and m,
            timeout_s,
            f"{count} message(s) in {self.dumps}",
        )


def to_prefix(prefix: str):
    """A `where` filter: messages with a recipient starting with PREFIX."""
    return lambda m: any(r.startswith(prefix) for r in m.recipients)
