"""The scheduler's queue index: rescans read only new ids, notified ids are
re-read, and the index holds due times only."""

from __future__ import annotations

import asyncio
import math
import socket

from tlsrelay.relay import spool as spool_mod
from tlsrelay.relay.delivery.index import QueueIndex


def set_state(world, queue_id: str, **fields) -> None:
    entry = world.spool.entry(queue_id)
    for name, value in fields.items():
        setattr(entry.state, name, value)
    world.spool.write_state(queue_id, entry.state)


def test_refresh_reads_new_ids_only_and_forgets_removed(world):
    fresh = world.queue("b@example.org")
    later = world.queue("c@example.org")
    held = world.queue("d@example.org")
    set_state(world, later, attempts=1, next_attempt=world.clock.now + 600)
    set_state(world, held, held=True)
    index = QueueIndex(world.spool)
    assert index.refresh() == 3
    assert index.due_of(fresh) == 0.0
    assert index.due_of(later) == world.clock.now + 600
    assert index.due_of(held) == math.inf
    assert index.pop_due(world.clock.now) == [fresh]
    assert index.earliest() == world.clock.now + 600

    # Known ids are not read again: a changed state file goes unseen until
    # the id is re-read (as a notification makes the scheduler do).
    set_state(world, later, next_attempt=0.0)
    assert index.refresh() == 0
    assert index.due_of(later) == world.clock.now + 600
    index.reread(later)
    assert index.pop_due(world.clock.now) == [later]

    world.spool.remove(fresh)
    index.refresh()
    assert fresh not in index and len(index) == 2
    index.reread(held)  # still held: never in the heap
    assert index.pop_due(math.inf - 1) == []


def test_failed_recipients_awaiting_dsn_are_due_at_once(world):
    qid = world.queue("b@example.org")
    entry = world.spool.entry(qid)
    entry.state.next_attempt = world.clock.now + 3600
    entry.state.recipients[0].status = spool_mod.FAILED
    world.spool.write_state(qid, entry.state)
    index = QueueIndex(world.spool)
    index.refresh()
    assert index.pop_due(world.clock.now) == [qid]


def test_stale_heap_entries_are_skipped_and_bounded(world):
    qid = world.queue("b@example.org")
    index = QueueIndex(world.spool)
    index.refresh()
    for i in range(5000):
        index.set(qid, 100.0 + i)
    assert len(index._heap) <= 2 * len(index) + 1024
    assert index.pop_due(5099.0 - 1) == []
    assert index.pop_due(5099.0) == [qid]


def test_scheduler_sees_unlisted_mail_only_when_notified(world, make_mx):
    mx = make_mx()
    world.delivery["routes"] = {"example.org": mx.address}
    scheduler = world.scheduler()
    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.setblocking(False)

    async def go() -> None:
        scheduler.start_due(full=True)  # empty queue, directory listed
        qid = world.queue("b@example.org")
        scheduler.start_due(full=False)
        assert scheduler.in_flight == {} and qid not in scheduler.index

        sender.send(qid.encode())
        scheduler._on_notify(receiver)
        scheduler.start_due(full=False)
        assert list(scheduler.in_flight) == [qid]
        await asyncio.gather(*scheduler.in_flight.values())
        assert scheduler.in_flight == {}

    try:
        asyncio.run(go())
    finally:
        sender.close()
        receiver.close()
    assert len(mx.messages) == 1 and world.entries() == []


def test_retry_from_the_queue_command_is_picked_up_by_notification(world, make_mx):
    mx = make_mx(rcpt={"b@example.org": ["450 4.2.0 busy", "250 2.1.5 Ok"]})
    world.delivery["routes"] = {"example.org": mx.address}
    scheduler = world.scheduler()
    qid = world.queue("b@example.org")

    async def go() -> None:
        await scheduler.run_once()
        assert scheduler.index.due_of(qid) == world.clock.now + 300
        set_state(world, qid, next_attempt=0.0)  # what `queue retry` writes
        scheduler.start_due(full=False)
        assert scheduler.in_flight == {}  # not notified: not seen yet
        scheduler._notified.add(qid)
        scheduler.start_due(full=False)
        assert list(scheduler.in_flight) == [qid]
        await asyncio.gather(*scheduler.in_flight.values())

    asyncio.run(go())
    assert len(mx.messages) == 1 and world.entries() == []
    assert qid not in scheduler.index
