"""The spool: durable intake, state beside the message, nothing half-written."""

import asyncio
import errno
import os
import socket
import time

import pytest

from tlsrelay.relay import spool as sp


def envelope(**kw):
    fields = dict(
        sender="a@example.com",
        recipients=[sp.Recipient("b@example.org", notify="FAILURE")],
    )
    fields.update(kw)
    return sp.Envelope(**fields)


@pytest.fixture
def spool(tmp_path):
    return sp.Spool(tmp_path / "spool").create()


def test_commit_makes_a_readable_entry(spool):
    w = spool.writer(envelope(), prefix=b"Received: x\r\n")
    w.write(b"Subject: hi\r\n\r\nbody\r\n")
    queue_id = w.commit()

    entry = spool.entry(queue_id)
    assert entry.envelope.sender == "a@example.com"
    assert entry.envelope.recipients[0].notify == "FAILURE"
    assert entry.envelope.arrived > 0
    assert entry.state.recipients[0].status == sp.PENDING
    assert entry.queue_name == "active"
    assert spool.read_content(queue_id) == b"Received: x\r\nSubject: hi\r\n\r\nbody\r\n"
    assert entry.size == len(spool.read_content(queue_id))
    assert os.listdir(spool.tmp_dir) == []


def test_abort_leaves_nothing(spool):
    w = spool.writer(envelope())
    w.write(b"partial")
    w.abort()
    w.abort()
    assert spool.ids() == []
    assert os.listdir(spool.tmp_dir) == []


def test_write_error_is_spool_full_and_leaves_nothing(spool, monkeypatch):
    spool.memory_limit = 0  # straight to the tmp/ file
    w = spool.writer(envelope())

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sp.os, "write", full)
    with pytest.raises(sp.SpoolFull, match="ENOSPC"):
        w.write(b"x" * 100)
    monkeypatch.undo()
    assert os.listdir(spool.tmp_dir) == []
    assert spool.ids() == []


def test_fsync_error_at_commit_leaves_nothing(spool, monkeypatch):
    w = spool.writer(envelope())
    w.write(b"data\r\n")

    def broken(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(sp.os, "fsync", broken)
    with pytest.raises(sp.SpoolFull):
        w.commit()
    monkeypatch.undo()
    assert spool.ids() == [] and os.listdir(spool.tmp_dir) == []


def test_state_is_replaced_and_survives_reopen(spool):
    queue_id = spool.enqueue(envelope(), b"m\r\n")
    entry = spool.entry(queue_id)
    entry.state.attempts = 2
    entry.state.recipients[0].status = sp.DEFERRED
    entry.state.held = True
    with spool.locked(queue_id):
        spool.write_state(queue_id, entry.state)

    again = sp.Spool(spool.path).entry(queue_id)
    assert again.state.attempts == 2
    assert again.state.recipients[0].status == sp.DEFERRED
    assert again.queue_name == "hold"


def test_remove_and_unknown_ids(spool):
    queue_id = spool.enqueue(envelope(), b"m\r\n")
    spool.remove(queue_id)
    assert spool.ids() == []
    with pytest.raises(sp.NoSuchMessage):
        spool.entry(queue_id)
    with pytest.raises(sp.NoSuchMessage):
        spool.entry("../../etc/passwd")


def test_queue_ids_are_unique_and_sort_by_arrival():
    ids = [sp.new_queue_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 16 and i.isalnum() for i in ids)
    stamps = [i[:11] for i in ids]
    assert stamps == sorted(stamps)


def test_clean_tmp_removes_cut_short_receptions(spool):
    spool.memory_limit = 0
    w = spool.writer(envelope())
    w.write(b"half")
    assert spool.clean_tmp() == 1
    assert spool.ids() == []


def test_has_room_honours_the_reserve(spool):
    assert spool.has_room()
    spool.min_free_bytes = 1 << 62
    assert not spool.has_room()


def test_small_message_touches_no_file_until_commit(spool):
    w = spool.writer(envelope(), prefix=b"Received: x\r\n")
    w.write(b"Subject: hi\r\n\r\nbody\r\n")
    assert os.listdir(spool.tmp_dir) == []
    queue_id = w.commit()
    assert spool.read_content(queue_id) == b"Received: x\r\nSubject: hi\r\n\r\nbody\r\n"


def test_big_message_spills_to_its_tmp_file(spool):
    spool.memory_limit = 1000
    w = spool.writer(envelope())
    w.write(b"a" * 600)
    assert os.listdir(spool.tmp_dir) == []
    w.write(b"b" * 600)
    assert os.listdir(spool.tmp_dir) == [w.queue_id + sp.MSG_SUFFIX]
    w.write(b"c" * 600)
    queue_id = w.commit()
    assert spool.read_content(queue_id) == b"a" * 600 + b"b" * 600 + b"c" * 600
    assert w.size == 1800


def test_disk_full_at_commit_of_a_buffered_message_leaves_nothing(spool, monkeypatch):
    w = spool.writer(envelope())
    w.write(b"data\r\n")
    monkeypatch.setattr(sp.os, "write", enospc)
    with pytest.raises(sp.SpoolFull, match="ENOSPC"):
        w.commit()
    monkeypatch.undo()
    assert spool.ids() == [] and os.listdir(spool.tmp_dir) == []


def enospc(fd, data):
    raise OSError(errno.ENOSPC, "No space left on device")


# -- group commit ---------------------------------------------------------------


def writers(spool, n):
    out = []
    for i in range(n):
        w = spool.writer(envelope())
        w.write(f"message {i}\r\n".encode())
        out.append(w)
    return out


def run_batch(spool, ws):
    """Submit WS, commit them as one batch; return the outcomes in order."""
    committer = sp.Committer(spool)
    committer._start = lambda: None  # the test runs the batch itself

    async def main():
        futures = [committer.submit(w) for w in ws]
        await asyncio.to_thread(committer.run_once)
        results = await asyncio.gather(*futures, return_exceptions=True)
        await asyncio.sleep(0)  # the batch's notify runs after the answers
        return results

    results = asyncio.run(main())
    assert committer.batches == 1
    return results


@pytest.fixture
def delivery_socket(spool):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(spool.notify_path))
    sock.setblocking(False)
    yield sock
    sock.close()


def received(sock):
    got = []
    try:
        while True:
            got.append(sock.recv(4096).decode())
    except BlockingIOError:
        return got


def test_group_commit_syncs_each_file_and_the_directory_once_before_answering(
    spool, monkeypatch, delivery_socket
):
    ws = writers(spool, 3)
    synced, dir_syncs = [], []
    real_fdatasync, real_fsync_dir = sp.os.fdatasync, sp._fsync_dir

    def fdatasync(fd):
        synced.append(fd)
        real_fdatasync(fd)

    def fsync_dir(path):
        # Every file is synced and renamed before the one directory fsync.
        assert len(synced) == 3 and len(spool.ids()) == 3
        dir_syncs.append(path)
        real_fsync_dir(path)

    monkeypatch.setattr(sp.os, "fdatasync", fdatasync)
    monkeypatch.setattr(sp, "_fsync_dir", fsync_dir)
    results = run_batch(spool, ws)

    assert results == [w.queue_id for w in ws]
    assert dir_syncs == [spool.queue_dir]
    assert spool.ids() == sorted(results)
    assert spool.read_content(results[1]) == b"message 1\r\n"
    assert os.listdir(spool.tmp_dir) == []
    assert received(delivery_socket) == [" ".join(results)]


def test_group_commit_refuses_only_the_message_that_hit_a_full_disk(
    spool, monkeypatch, delivery_socket
):
    ws = writers(spool, 3)
    real_write = sp.os.write

    def write(fd, data):
        if b"message 1" in bytes(data):
            enospc(fd, data)
        return real_write(fd, data)

    monkeypatch.setattr(sp.os, "write", write)
    first, second, third = run_batch(spool, ws)

    assert first == ws[0].queue_id and third == ws[2].queue_id
    assert isinstance(second, sp.SpoolFull) and "ENOSPC" in str(second)
    assert spool.ids() == sorted([first, third])
    assert os.listdir(spool.tmp_dir) == []
    assert received(delivery_socket) == [f"{first} {third}"]


def test_group_commit_refuses_the_whole_batch_when_the_directory_fsync_fails(
    spool, monkeypatch, delivery_socket
):
    def broken(path):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(sp, "_fsync_dir", broken)
    results = run_batch(spool, writers(spool, 3))

    assert all(isinstance(r, sp.SpoolFull) for r in results)
    assert spool.ids() == [] and os.listdir(spool.tmp_dir) == []
    assert received(delivery_socket) == []


def test_committer_thread_commits_from_a_running_loop(spool):
    committer = sp.Committer(spool)

    async def main():
        return await asyncio.gather(*(committer.submit(w) for w in writers(spool, 5)))

    results = asyncio.run(main())
    assert spool.ids() == sorted(results)
    assert 1 <= committer.batches <= 5


def test_notify_many_splits_long_batches(spool, delivery_socket):
    ids = [sp.new_queue_id() for _ in range(sp.NOTIFY_BATCH + 1)]
    spool.notify_many(ids)
    spool.notify(ids[0])
    got = received(delivery_socket)
    assert [g.split() for g in got] == [ids[: sp.NOTIFY_BATCH], ids[-1:], ids[:1]]


def test_a_bug_in_the_committer_refuses_the_batch_instead_of_hanging(
    spool, monkeypatch, caplog
):
    def buggy(self):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(sp.Writer, "publish", buggy)
    results = run_batch(spool, writers(spool, 2))
    assert all(isinstance(r, sp.SpoolFull) for r in results)
    assert spool.ids() == [] and os.listdir(spool.tmp_dir) == []
    assert "simulated bug" in caplog.text


def test_removal_by_delivery_leaves_the_queue_at_once_and_tmp_soon(spool):
    queue_id = spool.enqueue(envelope(), b"m\r\n")
    with spool.locked(queue_id):
        spool.remove(queue_id, durable=False)
        assert spool.ids() == []
        # Unlinked only once the lock is gone: the reaper waits for it.
        assert os.listdir(spool.tmp_dir) == [queue_id + sp.GONE_SUFFIX]
    deadline = time.monotonic() + 5
    while os.listdir(spool.tmp_dir) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert os.listdir(spool.tmp_dir) == []
    with pytest.raises(sp.NoSuchMessage):
        spool.remove(queue_id, durable=False)


def test_notify_keeps_ids_while_the_delivery_queue_is_full(spool, delivery_socket):
    filler = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    filler.setblocking(False)
    with filler:
        with pytest.raises(BlockingIOError):
            for _ in range(10_000):
                filler.sendto(b"X", str(spool.notify_path))
    ids = [sp.new_queue_id() for _ in range(3)]
    assert spool.notify_many(ids) is False
    assert set(received(delivery_socket)) == {"X"}
    assert spool.notify_many([]) is True
    assert received(delivery_socket) == [" ".join(ids)]
