"""Fixtures for the real-parts tier: a tlsrelay node, smtp-sink, customers.

`RelayNode` runs `tlsrelay -c CONFIG serve` as a child process exactly as an
operator would: a config in the test's directory, a trustme certificate for
the node's host name, free loopback ports, routes to the test's sink, and
filtering-list entries added with `tlsrelay allow add`. It can be killed
with SIGKILL and started again on the same spool (the crash test).

Every process started here is stopped here, by pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import trustme

from support.postfix import (
    SmtpSink,
    _listening,
    _pid_alive,
    children_of,
    free_port,
    wait_until,
)

HOSTNAME = "lon-tls.relay.example"
LOCATION = "LON"
TLSRELAY = [str(Path(sys.executable).with_name("tlsrelay"))]


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return (
            "{" + ", ".join(f"{_toml(k)} = {_toml(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(value)


class RelayNode:
    """One tlsrelay node in DIR, driven through its command line."""

    def __init__(
        self,
        root: Path,
        routes: Mapping[str, str],
        overrides: Mapping[str, Mapping[str, object]] | None = None,
    ):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.smtps_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.ca_file = self.root / "ca.pem"
        self.config = self.root / "tlsrelay.toml"
        self.output = self.root / "serve.log"
        self._write_certificate()
        self._write_config(routes, overrides or {})

    def _write_certificate(self) -> None:
        ca = trustme.CA()
        cert = ca.issue_cert(HOSTNAME, "127.0.0.1")
        cert.private_key_pem.write_to_path(str(self.root / "key.pem"))
        with open(self.root / "cert.pem", "wb") as f:
            for blob in cert.cert_chain_pems:
                f.write(blob.bytes())
        ca.cert_pem.write_to_path(str(self.ca_file))

    def _write_config(self, routes, overrides) -> None:
        sections: dict[str, dict[str, object]] = {
            "node": {"name": "interop-1", "location": LOCATION, "hostname": HOSTNAME},
            "listen": {
                "submission": [f"127.0.0.1:{self.port}"],
                "smtps": [f"127.0.0.1:{self.smtps_port}"],
                "workers": 2,
            },
            "tls": {"cert": "cert.pem", "key": "key.pem"},
            "delivery": {
                "routes": dict(routes),
                "minimal_backoff_s": 1,
                "maximal_backoff_s": 2,
            },
            "control": {"allow_private_ips": True},
        }
        for name, table in overrides.items():
            sections.setdefault(name, {}).update(table)
        text = ""
        for name, table in sections.items():
            text += f"[{name}]\n"
            text += "".join(f"{k} = {_toml(v)}\n" for k, v in table.items())
        self.config.write_text(text)

    # --- command line -----------------------------------------------------------

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [*TLSRELAY, "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"tlsrelay {' '.join(args)} exited {proc.returncode}:\n"
                f"{proc.stdout}{proc.stderr}"
            )
        return proc

    def allow(self, network: str) -> None:
        self.cli("allow", "add", LOCATION, network)

    # --- process ----------------------------------------------------------------

    def start(self) -> RelayNode:
        assert self.proc is None or self.proc.poll() is not None
        out = open(self.output, "ab")
        self.proc = subprocess.Popen(
            [*TLSRELAY, "-c", str(self.config), "serve"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        wait_until(
            lambda: self.proc.poll() is not None or _listening("127.0.0.1", self.port),
            30,
            f"tlsrelay serve on port {self.port} (output in {self.output})",
        )
        assert self.proc.poll() is None, f"serve exited; see {self.output}"
        return self

    @property
    def pid(self) -> int:
        assert self.proc
        return self.proc.pid

    def children(self) -> list[int]:
        return children_of(self.pid)

    def kill9(self) -> list[int]:
        """SIGKILL the supervisor; returns the pids of its children then."""
        children = self.children()
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)
        return children

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a while; children are waited for too."""
        if not self.proc or self.proc.poll() is not None:
            return
        children = self.children()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(25)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        deadline = time.monotonic() + 10
        while any(_pid_alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in children:
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)

    def log(self) -> str:
        try:
            return self.output.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@pytest.fixture
def sink(tmp_path) -> Iterator[SmtpSink]:
    with SmtpSink(tmp_path / "sink") as s:
        yield s


@pytest.fixture
def relay_factory(tmp_path, sink):
    """make(allow=[...], **overrides) -> a started RelayNode routing
    dest.example to the sink."""
    nodes: list[RelayNode] = []

    def make(allow=(), overrides=None, start=True) -> RelayNode:
        node = RelayNode(
            tmp_path / f"relay{len(nodes) or ''}",
            {"dest.example": sink.address},
            overrides,
        )
        nodes.append(node)
        for network in allow:
            node.allow(network)
        return node.start() if start else node

    yield make
    for node in nodes:
        node.stop()
