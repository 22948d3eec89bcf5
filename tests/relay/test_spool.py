"""The spool: durable intake, state beside the message, nothing half-written."""

import errno
import os

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
    w = spool.writer(envelope())
    w.write(b"half")
    assert spool.clean_tmp() == 1
    assert spool.ids() == []


def test_has_room_honours_the_reserve(spool):
    assert spool.has_room()
    spool.min_free_bytes = 1 << 62
    assert not spool.has_room()
