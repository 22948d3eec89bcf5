"""What one benchmark run measures, besides what smtpload reports itself.

- Machine CPU: busy time of all cores from /proc/stat. Postfix forks
  short-lived helpers, so the server's CPU is the machine's busy time during
  the run less the load generator's own (its `client_cpu_s`) and less this
  sampler's; the same rule applies to both servers. The sink's CPU is in it,
  alike for both.
- Memory of the server's process tree, sampled every SAMPLE_S: RSS summed
  (shared pages counted in every process, as smtpload does) and PSS (shared
  pages split between the processes that map them: the fair number for
  Postfix's many processes).
- Probes over time: the server's queue length and the sink's count.

This module reads /proc and runs the load generator; it never sends traffic
itself and never signals a process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from servers import descendants

CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_S = 0.5
SMTPLOAD = Path(__file__).resolve().parent.parent.parent / "shared/bench/smtpload.py"


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (idle and iowait excluded)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = ticks[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def tree_pids(pid: int) -> list[int]:
    return [pid, *descendants(pid)] if pid else []


def tree_memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB summed over PID and its live descendants."""
    rss = pss = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            continue
    return rss, pss


def _role(pid: int, comm: str) -> str:
    """Postfix's processes by program name, tlsrelay's by module."""
    if not comm.startswith("python") and comm != "tlsrelay":
        return comm
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace")
    except OSError:
        return comm
    for name in ("worker", "delivery", "control"):
        if f"tlsrelay.relay.{name}" in argv or f"tlsrelay.{name}" in argv:
            return name
    return "supervisor" if "serve" in argv else comm


def tree_cpu(pid: int) -> dict[int, tuple[str, float, float]]:
    """{pid: (role, own CPU s, CPU s of its reaped children)} over the tree."""
    out = {}
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        comm = raw[raw.index(b"(") + 1 : raw.rindex(b")")].decode(errors="replace")
        fields = raw.rsplit(b")", 1)[1].split()
        own = (int(fields[11]) + int(fields[12])) / CLK_TCK
        reaped = (int(fields[13]) + int(fields[14])) / CLK_TCK
        out[p] = (_role(p, comm), own, reaped)
    return out


def cpu_by_role(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds per role between two tree_cpu() snapshots. Processes that
    exited and were reaped meanwhile count under "(reaped)"; ones that exited
    unreaped (their parent also gone) are lost, which this bench never sees."""
    roles: dict[str, float] = {}
    for p, (role, own, reaped) in after.items():
        _, own0, reaped0 = before.get(p, (role, 0.0, 0.0))
        roles[role] = roles.get(role, 0.0) + own - own0
        if reaped - reaped0 > 0:
            roles["(reaped)"] = roles.get("(reaped)", 0.0) + reaped - reaped0
    return {r: round(v, 3) for r, v in sorted(roles.items(), key=lambda kv: -kv[1])}


class Sampler(threading.Thread):
    """Samples memory and probes in the background until `stop()`."""

    def __init__(self, pid: int, probes: dict[str, Callable[[], int]]) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.probes = probes
        self.t0 = time.monotonic()
        self.series: list[dict[str, float]] = []
        self.peak_rss_kib = self.peak_pss_kib = 0
        self.cpu_s = 0.0
        self._stop_event = threading.Event()

    def sample(self) -> dict[str, float]:
        rss, pss = tree_memory_kib(self.pid)
        self.peak_rss_kib = max(self.peak_rss_kib, rss)
        self.peak_pss_kib = max(self.peak_pss_kib, pss)
        point = {"t": round(time.monotonic() - self.t0, 2), "rss": rss, "pss": pss}
        point.update({name: probe() for name, probe in self.probes.items()})
        self.series.append(point)
        return point

    def run(self) -> None:
        """Sample every SAMPLE_S, but spend at most a fifth of a core on it:
        PSS of 2,000 Postfix processes takes the kernel a while to add up."""
        pause = SAMPLE_S
        while not self._stop_event.wait(pause):
            t0 = time.monotonic()
            self.sample()
            pause = max(SAMPLE_S, 4 * (time.monotonic() - t0))
        self.cpu_s = time.thread_time()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)


def run_load(args: list[str], timeout_s: float) -> dict:
    """Run smtpload with ARGS; its JSON summary plus its exit status."""
    done = subprocess.run(
        [sys.executable, str(SMTPLOAD), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"smtpload printed nothing: {done.stderr[-2000:]}")
    result = json.loads(lines[-1])
    result["exit_status"] = done.returncode
    return result
