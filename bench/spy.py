"""py-spy over every Python process of a tlsrelay node while a load runs.

`bench/run.py --profile` starts one `py-spy record --format raw` per process
of the node's tree (supervisor, workers, delivery, control) when the measured
load starts and stops them with SIGINT when it ends. The collapsed stacks are
kept, and `summary()` turns them into the top functions by own time and by
inclusive time per role, as written in docs/performance.md.

Sampling costs CPU, so profiled runs are for finding hot spots, never for the
numbers in the table. py-spy only reads the processes' memory (ptrace); this
module signals only the py-spy processes it started.
"""

from __future__ import annotations

import collections
import re
import signal
import subprocess
import sys
from pathlib import Path

from servers import descendants

RATE_HZ = 200
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def role(pid: int) -> str:
    """worker, delivery, control or supervisor, from the process's command line."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "gone"
    text = b" ".join(argv).decode(errors="replace")
    for name in ("worker", "delivery", "control"):
        if f"tlsrelay.relay.{name}" in text or f"tlsrelay.{name}" in text:
            return name
    return "supervisor" if "serve" in text else "other"


class Profiler:
    def __init__(self, root_pid: int, out_dir: Path) -> None:
        self.root_pid = root_pid
        self.out_dir = out_dir
        self.procs: list[tuple[str, Path, subprocess.Popen]] = []

    def start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        spy = Path(sys.executable).with_name("py-spy")
        for pid in [self.root_pid, *descendants(self.root_pid)]:
            name = role(pid)
            out = self.out_dir / f"{name}-{pid}.txt"
            cmd = [str(spy), "record", "--pid", str(pid), "--format", "raw"]
            cmd += ["--rate", str(RATE_HZ), "--nonblocking", "--output", str(out)]
            proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            self.procs.append((name, out, proc))

    def stop(self) -> dict[str, dict]:
        for _, _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for _, _, proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return summary([(name, out) for name, out, _ in self.procs])


class PerfProfiler:
    """`perf record -e cpu-clock` over the node's processes: where CPU time
    goes by shared object (CPython, OpenSSL, kernel, uvloop) and by symbol.
    cpu-clock samples only running threads, so unlike py-spy's stacks it
    never counts a thread waiting in fsync."""

    def __init__(self, root_pid: int, out_dir: Path) -> None:
        self.root_pid = root_pid
        self.data = out_dir / "perf.data"
        self.proc: subprocess.Popen | None = None
        self.roles: dict[int, str] = {}

    def start(self) -> None:
        self.data.parent.mkdir(parents=True, exist_ok=True)
        tree = [self.root_pid, *descendants(self.root_pid)]
        self.roles = {pid: role(pid) for pid in tree}
        pids = ",".join(map(str, tree))
        cmd = ["perf", "record", "-e", "cpu-clock", "-F", "499", "-p", pids]
        cmd += ["-o", str(self.data)]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self) -> dict[str, list]:
        if self.proc is None:
            return {}
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        found = {key: self._report(key) for key in ("pid,dso", "dso,sym")}
        found["pids"] = [f"{pid} {name}" for pid, name in self.roles.items()]
        return found

    def _report(self, sort: str, top: int = 25) -> list:
        cmd = ["perf", "report", "-i", str(self.data), "--stdio", "--sort", sort]
        done = subprocess.run(
            [*cmd, "--percent-limit", "0.5"], capture_output=True, text=True
        )
        rows = [line.strip() for line in done.stdout.splitlines()]
        return [r for r in rows if r and not r.startswith("#")][:top]


class Both:
    """py-spy and perf together (--profile)."""

    def __init__(self, root_pid: int, out_dir: Path) -> None:
        self.parts = [Profiler(root_pid, out_dir), PerfProfiler(root_pid, out_dir)]

    def start(self) -> None:
        for part in self.parts:
            part.start()

    def stop(self) -> dict:
        stacks, perf = (part.stop() for part in self.parts)
        return {**stacks, "perf": perf}


def _frame_name(frame: str) -> str:
    """`func (path/to/mod.py:123)` -> `mod.py:func`, lines merged."""
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    return f"{Path(m['file']).name}:{m['func']}"


def summary(files: list[tuple[str, Path]], top: int = 15) -> dict[str, dict]:
    """Per role: samples (RATE_HZ a second of a busy thread), and the TOP
    functions by own and by inclusive share of those samples."""
    own: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    incl: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    total: collections.Counter = collections.Counter()
    for name, path in files:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            frames = [_frame_name(f) for f in stack.split(";") if f]
            n = int(count)
            total[name] += n
            if frames:
                own[name][frames[-1]] += n
            for func in set(frames):
                incl[name][func] += n
    return {
        name: {
            "samples": total[name],
            "busy_thread_s": round(total[name] / RATE_HZ, 2),
            "own": _shares(own[name], total[name], top),
            "inclusive": _shares(incl[name], total[name], top),
        }
        for name in total
    }


def _shares(counter: collections.Counter, total: int, top: int) -> list:
    return [(func, round(100 * n / total, 1)) for func, n in counter.most_common(top)]
