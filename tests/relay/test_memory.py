"""An idle TLS session costs the worker at most 48 KiB (DESIGN.md, TLS).

asyncio's SSL transport would keep about 256 KiB per connection; the
memory-BIO adapter keeps OpenSSL's buffers only while records are in flight.
Measured as the growth of the worker's resident memory over many sessions
that finished the handshake and EHLO and now wait, after a warm-up that
takes the one-time costs out.
"""

from __future__ import annotations

from pathlib import Path

from support.node import Node

BUDGET_KIB = 48
SESSIONS = 150
WARM_UP = 20


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            return int(line.split()[1])
    raise AssertionError("no Rss in smaps_rollup")


def test_idle_tls_session_costs_at_most_48_kib(tmp_path):
    def idle_session():
        # smtps: the same adapter as after STARTTLS, one round trip less.
        wire = node.connect_tls(ctx)
        wire.expect(220)
        wire.command("EHLO client.example", 250)
        return wire

    with Node.create(tmp_path) as node:
        node.start("--without", "delivery")
        ctx = node.client_context()
        (worker,) = node.child_pids()
        for wire in [idle_session() for _ in range(WARM_UP)]:
            wire.close()

        before = rss_kib(worker)
        sessions = [idle_session() for _ in range(SESSIONS)]
        try:
            per_session = (rss_kib(worker) - before) / SESSIONS
        finally:
            for wire in sessions:
                wire.close()
        print(f"{per_session:.1f} KiB per idle TLS session")
        assert per_session <= BUDGET_KIB
