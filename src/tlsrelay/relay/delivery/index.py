"""The delivery process's in-memory index of the queue: id -> when due.

How it works. `refresh()` takes the directory listing of queue/, forgets ids
that are gone and reads the state file of ids it has not seen (never the
envelope or the content: a fresh message has no state file and is due at
once). `reread(id)` reads one state file again; the scheduler calls it after
each attempt and for every id that arrives on the notify socket (the
listeners' new mail, the queue commands' retry/hold/release/bounce). A heap
of (due, id) gives the due ids without looking at the others; superseded
heap entries are skipped when they surface and the heap is rebuilt when they
pile up.

So a rescan of a large queue costs one listdir and a set difference, and
memory is one float and one heap entry per queued message.

Due times: next_attempt from the state file; 0 when final recipients wait
for their DSN or for removal (a crash, `queue bounce`); infinity while held.

It never writes to the spool.
"""

from __future__ import annotations

import heapq
import math
import os

from tlsrelay.relay import spool as spool_mod

HELD = math.inf


def due_time(state: spool_mod.State) -> float:
    if state.held:
        return HELD
    statuses = state.recipients
    pending_dsn = any(
        rs.status == spool_mod.FAILED and not rs.dsn_sent for rs in statuses
    )
    if pending_dsn or all(rs.status in spool_mod.FINAL for rs in statuses):
        return 0.0
    return state.next_attempt


class QueueIndex:
    def __init__(self, spool: spool_mod.Spool) -> None:
        self.spool = spool
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, queue_id: str) -> bool:
        return queue_id in self._due

    def due_of(self, queue_id: str) -> float | None:
        return self._due.get(queue_id)

    def refresh(self) -> int:
        """Sync with the directory listing; return how many ids were new."""
        suffix = spool_mod.MSG_SUFFIX
        listed = {
            name[: -len(suffix)]
            for name in os.listdir(self.spool.queue_dir)
            if name.endswith(suffix)
        }
        for queue_id in self._due.keys() - listed:
            del self._due[queue_id]
        new = listed - self._due.keys()
        for queue_id in sorted(new):
            self.reread(queue_id)
        return len(new)

    def reread(self, queue_id: str) -> None:
        """Read one message's state file again (or forget a message gone)."""
        if not queue_id.isalnum():
            return
        base = self.spool.queue_dir / queue_id
        try:
            raw = base.with_suffix(spool_mod.STATE_SUFFIX).read_bytes()
            self.set(queue_id, due_time(spool_mod.State.from_json(raw)))
        except FileNotFoundError:
            if base.with_suffix(spool_mod.MSG_SUFFIX).exists():
                self.set(queue_id, 0.0)  # fresh: never tried
            else:
                self.forget(queue_id)
        except ValueError:
            # A state file cut short is replaced by rename, never seen
            # half-written; one unreadable is retried at the next attempt.
            self.set(queue_id, 0.0)

    def set(self, queue_id: str, due: float) -> None:
        self._due[queue_id] = due
        if due != HELD:
            heapq.heappush(self._heap, (due, queue_id))
        if len(self._heap) > 2 * len(self._due) + 1024:
            self._rebuild()

    def forget(self, queue_id: str) -> None:
        self._due.pop(queue_id, None)

    def pop_due(self, now: float) -> list[str]:
        """Ids due at NOW, earliest first; each leaves the heap until set again."""
        found = []
        while self._heap and self._heap[0][0] <= now:
            due, queue_id = heapq.heappop(self._heap)
            if self._due.get(queue_id) == due:
                found.append(queue_id)
        return found

    def earliest(self) -> float | None:
        """When the next id is due, None when nothing waits."""
        while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def _rebuild(self) -> None:
        self._heap = [(d, q) for q, d in self._due.items() if d != HELD]
        heapq.heapify(self._heap)
