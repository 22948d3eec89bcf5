"""The process supervisor behind `tlsrelay serve`.

How this works. The supervisor itself serves no traffic. It starts, each as
`python -m MODULE -c CONFIG`:

- one listener worker (tlsrelay.relay.worker) per core, all binding the same
  addresses with SO_REUSEPORT so the kernel spreads connections over them;
- exactly one delivery process (tlsrelay.relay.delivery);
- exactly one control process (tlsrelay.control.process), which publishes the
  filtering-list snapshot and serves the API and portal.

Every child asks the kernel for SIGKILL when the supervisor dies
(PR_SET_PDEATHSIG), and runs in its own process group so that a Ctrl-C at
the terminal reaches only the supervisor, which then stops the children in
order. A `kill -9` of the supervisor therefore leaves nothing holding the
ports or writing the spool; the spool is crash-safe by design.

A child that dies is started again after a backoff that doubles from half a
second up to 30 s, and resets once the child has run for a minute.
SIGHUP is passed on to the workers (certificate reload). SIGTERM and SIGINT
stop everything: SIGTERM to the children, SIGKILL to any still running after
`STOP_TIMEOUT_S`.

Signals are handled synchronously (blocked, then taken with sigtimedwait), so
no handler ever runs in the middle of the supervisor's own bookkeeping.

This module never opens the spool's messages, the store or client sockets.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

WORKER = "tlsrelay.relay.worker"
DELIVERY = "tlsrelay.relay.delivery"
CONTROL = "tlsrelay.control.process"

PR_SET_PDEATHSIG = 1
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
# A child that ran this long before dying starts again without delay growth.
HEALTHY_AFTER_S = 60.0

SIGNALS = {signal.SIGCHLD, signal.SIGHUP, signal.SIGTERM, signal.SIGINT}


class StartError(Exception):
    """The relay could not be started; the message says why."""


@dataclass
class Child:
    name: str  # "worker-1", "delivery", "control"
    module: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None

    @property
    def is_worker(self) -> bool:
        return self.module == WORKER


def module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _child_setup(parent_pid: int) -> None:
    """Runs in the child between fork and exec."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    os.setpgid(0, 0)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The supervisor may have died before prctl took effect.
    if os.getppid() != parent_pid:
        os._exit(1)


class Supervisor:
    def __init__(
        self,
        config_path: Path,
        workers: int,
        log_level: str = "INFO",
        modules: Sequence[str] = (DELIVERY, CONTROL),
    ) -> None:
        self.config_path = config_path
        self.log_level = log_level
        self.children = [Child(f"worker-{i + 1}", WORKER) for i in range(workers)]
        for module in modules:
            if module_exists(module):
                self.children.append(Child(module.rsplit(".", 1)[-1], module))
            else:
                log.warning("%s is not installed; running without it", module)
        self.stopping = False

    # -- starting -----------------------------------------------------------

    def _spawn(self, child: Child, ready_fd: int | None = None) -> None:
        argv = [sys.executable, "-m", child.module, "-c", str(self.config_path)]
        if child.is_worker:
            argv += ["--log-level", self.log_level]
        pass_fds: tuple[int, ...] = ()
        if ready_fd is not None:
            argv += ["--ready-fd", str(ready_fd)]
            pass_fds = (ready_fd,)
        parent = os.getpid()
        child.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            pass_fds=pass_fds,
            preexec_fn=lambda: _child_setup(parent),
        )
        child.started_at = time.monotonic()
        child.restart_at = None
        log.info("started %s pid=%d", child.name, child.proc.pid)

    def start(self) -> None:
        """Start every child; return once all workers listen."""
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        pipes: dict[int, Child] = {}
        for child in self.children:
            if child.is_worker:
                r, w = os.pipe()
                self._spawn(child, ready_fd=w)
                os.close(w)
                pipes[r] = child
            else:
                self._spawn(child)
        try:
            self._await_ready(pipes)
        except StartError:
            self.stop()
            raise

    def _await_ready(self, pipes: dict[int, Child]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        try:
            while pipes:
                left = deadline - time.monotonic()
                readable, _, _ = select.select(list(pipes), [], [], max(left, 0))
                if not readable:
                    names = ", ".join(c.name for c in pipes.values())
                    raise StartError(f"{names} did not start listening in time")
                for fd in readable:
                    if not os.read(fd, 64):
                        child = pipes[fd]
                        raise StartError(
                            f"{child.name} exited before listening; see its log above"
                        )
                    os.close(fd)
                    del pipes[fd]
        finally:
            for fd in pipes:
                os.close(fd)

    # -- running ------------------------------------------------------------

    def run(self) -> int:
        """Supervise until SIGTERM or SIGINT; return the exit status."""
        while not self.stopping:
            timeout = self._next_timeout()
            info = signal.sigtimedwait(SIGNALS, timeout)
            if info is None:
                self._restart_due()
                continue
            self._on_signal(info.si_signo)
        return 0

    def _next_timeout(self) -> float:
        due = [c.restart_at for c in self.children if c.restart_at is not None]
        if not due:
            return 60.0
        return max(min(due) - time.monotonic(), 0.0)

    def _on_signal(self, signo: int) -> None:
        if signo == signal.SIGCHLD:
            self._reap()
            self._restart_due()
        elif signo == signal.SIGHUP:
            log.info("SIGHUP: workers reload the certificate")
            self._send(signal.SIGHUP, workers_only=True)
        else:
            log.info("%s: stopping", signal.Signals(signo).name)
            self.stop()

    def _reap(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.proc is None or child.proc.poll() is None:
                continue
            status = child.proc.returncode
            ran_s = now - child.started_at
            child.failures = 0 if ran_s >= HEALTHY_AFTER_S else child.failures + 1
            delay = min(BACKOFF_FIRST_S * 2 ** (child.failures - 1), BACKOFF_MAX_S)
            delay = delay if child.failures else 0.0
            log.warning(
                "%s pid=%d exited with status %d after %.1f s; restart in %.1f s",
                child.name,
                child.proc.pid,
                status,
                ran_s,
                delay,
            )
            child.proc = None
            child.restart_at = now + delay

    def _restart_due(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None and child.restart_at <= now:
                self._spawn(child)

    def _send(self, signo: int, workers_only: bool = False) -> None:
        for child in self.children:
            if child.proc is None or (workers_only and not child.is_worker):
                continue
            try:
                child.proc.send_signal(signo)
            except ProcessLookupError:
                pass

    # -- stopping -----------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM to every child, SIGKILL to those left after STOP_TIMEOUT_S."""
        self.stopping = True
        for child in self.children:
            child.restart_at = None
        self._send(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self._running():
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("children still running; killing them")
                self._send(signal.SIGKILL)
                break
            info = signal.sigtimedwait(SIGNALS, left)
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                log.warning("second stop signal; killing the children")
                self._send(signal.SIGKILL)
        for child in self.children:
            if child.proc is not None:
                child.proc.wait()
                child.proc = None

    def _running(self) -> bool:
        return any(c.proc is not None and c.proc.poll() is None for c in self.children)

    def pids(self) -> list[int]:
        return [c.proc.pid for c in self.children if c.proc is not None]
