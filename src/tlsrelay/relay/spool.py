"""The durable spool: the only link between listeners and delivery.

Layout of one node's spool directory:

    tmp/            messages being received; never read by delivery
    queue/ID.msg    an accepted message: envelope header + content, immutable
    queue/ID.st     its delivery state (per-recipient status, attempts, hold),
                    replaced atomically after every change; absent = fresh
    notify.sock     datagram socket of the delivery process: queue ids
                    separated by spaces ("ID" or "ID1 ID2 ..." = new mail)

A message file is written to tmp/, fsynced, renamed into queue/ and the
directory fsynced before the listener answers 250. Nothing is ever rewritten
in place: the state file is replaced by rename. So a crash at any moment
leaves either no message or a complete one; a complete one with a lost state
update is delivered again (a duplicate), never lost.

How intake works. A Writer keeps the first MEMORY_LIMIT octets of a message
in memory and opens its tmp/ file only when the message grows past that, so
a small message costs no file system call until its end. Then either
Writer.commit makes it durable on its own (blocking: DSNs, notices), or a
listener hands it to the process's Committer: one thread that takes every
message waiting at that moment, writes and fdatasyncs each file, renames
them all into queue/, fsyncs the directory once for the whole batch, and
only then resolves each session's future, which is when the session may
answer 250 (group commit). A message whose own file fails is refused alone;
a failed directory fsync refuses the whole batch. Either way a refused
message leaves nothing behind.

Message file format: b"TLSRELAY1 <n>\\n", then n octets of envelope JSON,
then the message exactly as it will be sent (CRLF lines, unstuffed).

This module never parses SMTP and never opens sockets except the one
best-effort datagram socket to wake delivery.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import fcntl
import json
import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

MAGIC = b"TLSRELAY1 "
MSG_SUFFIX = ".msg"
STATE_SUFFIX = ".st"
GONE_SUFFIX = ".gone"  # a removed message in tmp/, waiting to be unlinked
# Content kept in memory before a message gets its tmp/ file.
MEMORY_LIMIT = 256 * 1024
# Queue ids per notify datagram (17 octets each with the space).
NOTIFY_BATCH = 64
# Queue ids kept for a later datagram while delivery's socket queue is full.
MAX_UNSENT = 10_000
NOTIFY_RETRY_S = 0.02

# Recipient statuses, in Postfix's words where it has them.
PENDING = "pending"  # never tried
DEFERRED = "deferred"  # tried, temporary failure, will retry
DELIVERED = "delivered"
FAILED = "failed"  # permanent failure (a DSN is due unless NOTIFY says no)
FINAL = frozenset({DELIVERED, FAILED})


class SpoolFull(Exception):
    """The spool cannot take the message now (disk full, quota, I/O error)."""


class NoSuchMessage(KeyError):
    """No message with that queue id is in the spool."""


@dataclass
class Recipient:
    address: str
    # RFC 3461 parameters as the client gave them, None when absent.
    notify: str | None = None
    orcpt: str | None = None


@dataclass
class Envelope:
    sender: str  # "" is the null reverse-path
    recipients: list[Recipient]
    ret: str | None = None  # RFC 3461 RET=FULL|HDRS
    envid: str | None = None
    body: str = "7BIT"  # 7BIT or 8BITMIME
    smtputf8: bool = False
    client_ip: str = ""
    client_helo: str = ""
    tls: str = ""  # e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384"
    location: str = ""
    arrived: float = 0.0
    # Set for mail the relay wrote itself (DSNs, notices): never bounced back.
    origin: str = "smtp"

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Envelope:
        raw = json.loads(data)
        raw["recipients"] = [Recipient(**r) for r in raw["recipients"]]
        return cls(**raw)


@dataclass
class RecipientState:
    status: str = PENDING
    last_error: str = ""
    # Set once the DSN for a failure (or delay) of this recipient is queued.
    dsn_sent: bool = False
    # Set once a delay DSN (NOTIFY=DELAY, [delivery] delay_warning_s) is queued.
    delay_dsn_sent: bool = False
    delivered_at: float = 0.0
    relay: str = ""


@dataclass
class State:
    attempts: int = 0
    next_attempt: float = 0.0
    held: bool = False
    last_error: str = ""
    recipients: list[RecipientState] = field(default_factory=list)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> State:
        raw = json.loads(data)
        raw["recipients"] = [RecipientState(**r) for r in raw["recipients"]]
        return cls(**raw)


def new_queue_id() -> str:
    """A unique, time-sortable id of 16 characters from [0-9A-Z]."""
    micros = time.time_ns() // 1000
    stamp = base64.b32hexencode(micros.to_bytes(7, "big")).decode()[:11]
    return stamp + base64.b32hexencode(secrets.token_bytes(5)).decode()[:5]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _translate(exc: OSError) -> SpoolFull:
    return SpoolFull(f"{errno.errorcode.get(exc.errno or 0, 'EIO')}: {exc.strerror}")


class Writer:
    """One message on its way into the spool; commit() makes it durable.

    Content stays in memory up to MEMORY_LIMIT octets (Spool.memory_limit);
    past that it goes to the tmp/ file as it arrives.
    """

    def __init__(
        self,
        spool: Spool,
        envelope: Envelope,
        prefix: bytes,
        memory_limit: int,
    ) -> None:
        self.spool = spool
        self.queue_id = new_queue_id()
        self.envelope = envelope
        self.size = 0
        self._tmp = spool.tmp_dir / (self.queue_id + MSG_SUFFIX)
        self._fd = -1
        self._published: Path | None = None
        head = envelope.to_json()
        self._chunks = [MAGIC + str(len(head)).encode() + b"\n" + head]
        self._buffered = len(self._chunks[0])
        self._memory_limit = memory_limit
        self.write(prefix)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def write(self, data: bytes) -> None:
        """Append message content; raises SpoolFull and leaves nothing behind."""
        if self._fd < 0:
            self._chunks.append(data)
            self._buffered += len(data)
            self.size += len(data)
            if self._buffered > self._memory_limit:
                self._to_file()
            return
        try:
            self._write(data)
        except OSError as exc:
            self.abort()
            raise _translate(exc) from exc
        self.size += len(data)

    def _to_file(self) -> None:
        """Create the tmp/ file and move the buffered octets into it."""
        try:
            self._open_and_flush()
        except OSError as exc:
            self.abort()
            raise _translate(exc) from exc

    def _open_and_flush(self) -> None:
        self._fd = os.open(
            self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )
        chunks, self._chunks = self._chunks, []
        self._buffered = 0
        self._write(b"".join(chunks))

    def sync_file(self) -> None:
        """Write what is buffered and fdatasync the tmp/ file; raises OSError.

        The first half of a commit, shared by commit() and the Committer.
        """
        if self._fd < 0:
            self._open_and_flush()
        os.fdatasync(self._fd)
        fd, self._fd = self._fd, -1
        os.close(fd)  # closed even when it fails: never closed twice

    def publish(self) -> None:
        """Rename the synced file into queue/; the directory still needs fsync."""
        final = self.spool.queue_dir / (self.queue_id + MSG_SUFFIX)
        os.rename(self._tmp, final)
        self._published = final

    def commit(self) -> str:
        """fsync, move into the queue, fsync the directory; return the queue id.

        Blocking: one message on its own. Listeners use a Committer instead.
        """
        try:
            self.sync_file()
            self.publish()
            _fsync_dir(self.spool.queue_dir)
        except OSError as exc:
            self.fail()
            raise _translate(exc) from exc
        return self.queue_id

    def fail(self) -> None:
        """Undo a commit that went wrong, also after the rename into queue/."""
        self.abort()
        if self._published is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._published)
            self._published = None

    def abort(self) -> None:
        """Forget the message; safe to call more than once."""
        self._chunks = []
        self._buffered = 0
        if self._fd < 0:
            # A file exists only once the content outgrew memory (or while a
            # commit writes it); unlinking a name never created is harmless.
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            return
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = -1
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)


class Committer:
    """Group commit: one thread makes waiting messages durable in batches.

    submit() is called from an event loop and returns a future that resolves
    to the queue id once the message's file and the queue directory are on
    disk, or fails with SpoolFull (nothing left behind). One wake-up of the
    loop resolves a whole batch; the batch's queue ids then go to delivery in
    one datagram. The thread starts at the first submit and lives as long as
    the process (a daemon: a crash mid-batch is a crash, answered by nobody).
    """

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._waiting: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0  # for tests and statistics
        self._retrying = False

    def submit(self, writer: Writer) -> asyncio.Future[str]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        self._start()
        self._waiting.put(_Pending(writer, future, loop))
        return future

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="spool-committer", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            self.run_once()

    def run_once(self) -> None:
        """Wait for a message, take all that wait with it, commit them."""
        batch = [self._waiting.get()]
        with contextlib.suppress(queue.Empty):
            while True:
                batch.append(self._waiting.get_nowait())
        self.commit_batch(batch)

    def commit_batch(self, batch: list[_Pending]) -> None:
        """Make BATCH durable, then hand every outcome back to its loop."""
        self.batches += 1
        try:
            self._make_durable(batch)
        except Exception:
            # A bug of ours: refuse the batch rather than leave sessions hanging.
            log.exception("group commit of %d messages failed", len(batch))
            for item in batch:
                item.writer.fail()
                item.error = SpoolFull("internal error")
        self._hand_back(batch)

    def _make_durable(self, batch: list[_Pending]) -> None:
        published: list[_Pending] = []
        for item in batch:
            try:
                item.writer.sync_file()
                item.writer.publish()
            except OSError as exc:
                item.writer.fail()
                item.error = _translate(exc)
                continue
            published.append(item)
        if published:
            try:
                _fsync_dir(self.spool.queue_dir)
            except OSError as exc:
                for item in published:
                    item.writer.fail()
                    item.error = _translate(exc)

    def _hand_back(self, batch: list[_Pending]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
        for item in batch:
            by_loop.setdefault(item.loop, []).append(item)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(self._resolve, items)

    def _resolve(self, items: list[_Pending]) -> None:
        """In the loop: answer each session, then wake delivery once."""
        committed = []
        for item in items:
            if item.error is None:
                committed.append(item.writer.queue_id)
            if item.future.done():
                continue
            if item.error is None:
                item.future.set_result(item.writer.queue_id)
            else:
                item.future.set_exception(item.error)
        if committed:
            # Done-callbacks run before this: the sessions log and answer first.
            asyncio.get_running_loop().call_soon(self._notify, committed)

    def _notify(self, queue_ids: list[str]) -> None:
        """Wake delivery; while its socket queue is full, try again shortly."""
        if self.spool.notify_many(queue_ids) or self._retrying:
            return
        self._retrying = True
        asyncio.get_running_loop().call_later(NOTIFY_RETRY_S, self._retry)

    def _retry(self) -> None:
        self._retrying = False
        self._notify([])


@dataclass
class _Pending:
    """One message handed to the Committer, and where its answer goes."""

    writer: Writer
    future: asyncio.Future[str]
    loop: asyncio.AbstractEventLoop
    error: SpoolFull | None = None


@dataclass
class Entry:
    """A queued message as delivery and the queue commands see it."""

    queue_id: str
    envelope: Envelope
    state: State
    size: int  # octets of content

    @property
    def queue_name(self) -> str:
        if self.state.held:
            return "hold"
        return "deferred" if self.state.attempts else "active"


class Spool:
    def __init__(self, path: str | os.PathLike[str], min_free_bytes: int = 0) -> None:
        self.path = Path(path)
        self.tmp_dir = self.path / "tmp"
        self.queue_dir = self.path / "queue"
        self.notify_path = self.path / "notify.sock"
        self.min_free_bytes = min_free_bytes
        self.memory_limit = MEMORY_LIMIT
        self._notify_sock: socket.socket | None = None
        self._unsent: list[str] = []
        self._doomed: queue.SimpleQueue[Path] | None = None

    def create(self) -> Spool:
        for d in (self.path, self.tmp_dir, self.queue_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self

    def clean_tmp(self) -> int:
        """Remove leftovers of receptions cut short by a crash (start-up only)."""
        removed = 0
        for item in self.tmp_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                item.unlink()
                removed += 1
        return removed

    # -- intake -------------------------------------------------------------

    def has_room(self, expected_size: int = 0) -> bool:
        """False when the disk is too full to promise durability."""
        try:
            st = os.statvfs(self.path)
        except OSError:
            return False
        free = st.f_bavail * st.f_frsize
        return free >= self.min_free_bytes + expected_size

    def writer(self, envelope: Envelope, prefix: bytes = b"") -> Writer:
        """Start a message; PREFIX (the trace header) goes before the content."""
        if not envelope.arrived:
            envelope.arrived = time.time()
        return Writer(self, envelope, prefix, self.memory_limit)

    def enqueue(self, envelope: Envelope, content: bytes) -> str:
        """Write a whole message at once (notices, DSNs); blocking."""
        w = self.writer(envelope)
        w.write(content)
        queue_id = w.commit()
        self.notify(queue_id)
        return queue_id

    def notify(self, queue_id: str) -> None:
        """Wake the delivery process; it also rescans, so losing this is fine."""
        self.notify_many([queue_id])

    def notify_many(self, queue_ids: list[str]) -> bool:
        """Send queue ids to delivery, NOTIFY_BATCH per datagram; best effort.

        Linux queues only net.unix.max_dgram_qlen (often 10) datagrams on a
        busy receiver. Ids that met a full queue are kept (up to
        MAX_UNSENT) and go with the next call; False means some wait, and
        the caller should call again soon (notify_many([])). Any other
        error drops them: delivery's rescan finds them.
        """
        pending = self._unsent + queue_ids
        self._unsent = []
        sock = self._notify_socket()
        path = str(self.notify_path)
        for start in range(0, len(pending), NOTIFY_BATCH):
            data = " ".join(pending[start : start + NOTIFY_BATCH]).encode()
            try:
                sock.sendto(data, path)
            except BlockingIOError:
                self._unsent = pending[start:][-MAX_UNSENT:]
                return False
            except OSError:
                return True
        return True

    def _notify_socket(self) -> socket.socket:
        """One unbound datagram socket per Spool, made on first use."""
        if self._notify_sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            self._notify_sock = sock
        return self._notify_sock

    # -- reading ------------------------------------------------------------

    def msg_path(self, queue_id: str) -> Path:
        if not queue_id.isalnum():
            raise NoSuchMessage(queue_id)
        return self.queue_dir / (queue_id + MSG_SUFFIX)

    def ids(self) -> list[str]:
        """Queue ids in arrival order."""
        names = (
            n[: -len(MSG_SUFFIX)]
            for n in os.listdir(self.queue_dir)
            if n.endswith(MSG_SUFFIX)
        )
        return sorted(names)

    def read_envelope(self, queue_id: str) -> tuple[Envelope, int, int]:
        """(envelope, offset of content, content size)."""
        try:
            with open(self.msg_path(queue_id), "rb") as f:
                first = f.readline(64)
                if not first.startswith(MAGIC):
                    raise ValueError(f"{queue_id}: not a tlsrelay spool file")
                n = int(first[len(MAGIC) :])
                head = f.read(n)
                total = os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            raise NoSuchMessage(queue_id) from None
        offset = len(first) + n
        return Envelope.from_json(head), offset, total - offset

    def read_content(self, queue_id: str) -> bytes:
        _, offset, _ = self.read_envelope(queue_id)
        with open(self.msg_path(queue_id), "rb") as f:
            f.seek(offset)
            return f.read()

    def read_state(self, queue_id: str, envelope: Envelope) -> State:
        path = self.queue_dir / (queue_id + STATE_SUFFIX)
        try:
            return State.from_json(path.read_bytes())
        except FileNotFoundError:
            return State(recipients=[RecipientState() for _ in envelope.recipients])

    def entry(self, queue_id: str) -> Entry:
        envelope, _, size = self.read_envelope(queue_id)
        return Entry(queue_id, envelope, self.read_state(queue_id, envelope), size)

    def entries(self) -> Iterator[Entry]:
        for queue_id in self.ids():
            with contextlib.suppress(NoSuchMessage):
                yield self.entry(queue_id)

    # -- changes ------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, queue_id: str) -> Iterator[None]:
        """Exclusive lock on one message, between delivery and queue commands."""
        try:
            fd = os.open(self.msg_path(queue_id), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NoSuchMessage(queue_id) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def write_state(self, queue_id: str, state: State) -> None:
        """Replace the state file atomically and durably."""
        final = self.queue_dir / (queue_id + STATE_SUFFIX)
        tmp = self.tmp_dir / (queue_id + STATE_SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, state.to_json())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
        _fsync_dir(self.queue_dir)

    def remove(self, queue_id: str, durable: bool = True) -> None:
        """Drop a message whose recipients are all final (or that was deleted).

        DURABLE=False is delivery's way after a message is done: no fsync of
        the directory (if a crash loses the unlink, the message comes back
        and is delivered again, a duplicate the design accepts), and the
        file leaves queue/ by a rename into tmp/ while a background thread
        unlinks it there, because freeing the inode and its blocks blocks
        for a journal handle (about 0.2 ms idle, more under load) and the
        caller is an event loop. A crash before that unlink leaves a tmp/
        file, which clean_tmp removes at start. An operator's delete keeps
        DURABLE, so a deleted message does not come back.
        """
        msg = self.msg_path(queue_id)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.queue_dir / (queue_id + STATE_SUFFIX))
        if not durable:
            gone = self.tmp_dir / (queue_id + GONE_SUFFIX)
            try:
                os.rename(msg, gone)
            except FileNotFoundError:
                raise NoSuchMessage(queue_id) from None
            self._reaper().put(gone)
            return
        try:
            os.unlink(msg)
        except FileNotFoundError:
            raise NoSuchMessage(queue_id) from None
        _fsync_dir(self.queue_dir)

    def _reaper(self) -> queue.SimpleQueue[Path]:
        """The queue of a daemon thread that unlinks removed messages."""
        if self._doomed is None:
            self._doomed = queue.SimpleQueue()
            threading.Thread(
                target=_reap, args=(self._doomed,), name="spool-reaper", daemon=True
            ).start()
        return self._doomed


def _reap(doomed: queue.SimpleQueue[Path]) -> None:
    while True:
        path = doomed.get()
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                # Wait for the remover's lock to go, so the last close, which
                # frees the inode, is this one and not the event loop's.
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.unlink(path)
            finally:
                os.close(fd)
