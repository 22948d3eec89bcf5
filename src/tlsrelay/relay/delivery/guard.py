"""The DSN rate guard (case 24): no address gets unlimited bounces from us.

One sliding window of 60 seconds per recipient address of the DSNs the
relay itself wrote (origin "dsn"). Up to dsn_rate_per_minute of them go out
per window; one more is the sign of a loop or a backscatter storm: the
scheduler logs a WARNING (once per address and window, an operator alert)
and holds that DSN and any further ones to the address in the queue,
deferred until the window has room. A held DSN is never dropped: it waits,
shows in `queue list`, and expires with the queue lifetime like any mail.

Pure bookkeeping: the caller passes the time; no I/O, no logging.
"""

from __future__ import annotations

from collections import deque

WINDOW_S = 60.0


class DsnRateGuard:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._sent: dict[str, deque[float]] = {}
        self._alerted_until: dict[str, float] = {}
        self._pruned_at = float("-inf")

    def admit(self, address: str, now: float) -> float | None:
        """Count one DSN to ADDRESS at NOW and return None when it may go;
        otherwise count nothing and return when the window has room."""
        if self.per_minute <= 0:
            return None
        key = address.lower()
        times = self._sent.setdefault(key, deque())
        while times and times[0] <= now - WINDOW_S:
            times.popleft()
        if len(times) < self.per_minute:
            times.append(now)
            return None
        return times[0] + WINDOW_S

    def alert_due(self, address: str, now: float) -> bool:
        """True once per address and window: time to tell the operator."""
        key = address.lower()
        if self._alerted_until.get(key, 0.0) > now:
            return False
        self._alerted_until[key] = now + WINDOW_S
        return True

    def prune(self, now: float) -> None:
        """Forget addresses with nothing in their window (bounded memory);
        does the work at most once per window."""
        if now - self._pruned_at < WINDOW_S:
            return
        self._pruned_at = now
        idle = [k for k, t in self._sent.items() if not t or t[-1] <= now - WINDOW_S]
        for key in idle:
            del self._sent[key]
        for key in [k for k, until in self._alerted_until.items() if until <= now]:
            del self._alerted_until[key]
