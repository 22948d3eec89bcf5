"""Fixtures for the real-parts tier: a tlsrelay node, smtp-sink, customers.

Most tests share one node and one sink for the session (`shared_relay`,
`shared_sink`), each test using its own client address and recipient
prefix, because starting a node with its control process costs seconds;
the crash test makes its own (`relay_factory`).

The node is tests/support/node.py's `Node` run as an operator would run it:
`tlsrelay -c CONFIG serve` with its control process, and filtering-list
entries added with `tlsrelay allow add` (store, then snapshot). This module
adds what the interop tests need on top: the CA file for Postfix and
swaks, a route from dest.example to the test's smtp-sink, and SIGKILL with
restart on the same spool for the crash test.

Every process started here is stopped here, by pid.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.node import Node
from support.postfix import SmtpSink


class RelayNode(Node):
    """A Node with a CA file on disk and kill -9 / restart."""

    @property
    def port(self) -> int:
        return self.submission_port

    @property
    def ca_file(self) -> Path:
        path = self.dir / "ca.pem"
        if not path.exists():
            self.ca.cert_pem.write_to_path(str(path))
        return path

    def allow(self, network: str) -> None:
        self.allow_add(network)

    def children(self) -> list[int]:
        return self.child_pids()

    def kill9(self) -> list[int]:
        """SIGKILL serve; returns the pids its children had."""
        children = self.child_pids()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None
        self._log_file.close()
        self._log_file = None
        # start() waits for the banner in serve.log: begin a fresh log.
        runs = len(list(self.dir.glob("serve.log.*")))
        self.log_path.rename(self.dir / f"serve.log.{runs + 1}")
        return children


# Client addresses listed on the shared node; anything else is not.
LISTED = ("127.0.0.2/32", "127.0.0.3/32")


@pytest.fixture(scope="session")
def shared_sink(tmp_path_factory) -> Iterator[SmtpSink]:
    with SmtpSink(tmp_path_factory.mktemp("shared") / "sink") as s:
        yield s


@pytest.fixture(scope="session")
def shared_relay(tmp_path_factory, shared_sink) -> Iterator[RelayNode]:
    """One node for the session, routing dest.example to `shared_sink`,
    with LISTED on its filtering list."""
    node = RelayNode.create(
        tmp_path_factory.mktemp("shared-relay"),
        routes={"dest.example": shared_sink.address},
        workers=2,
        control=True,
    )
    for network in LISTED:
        node.allow(network)
    node.start()
    yield node
    node.stop()


@pytest.fixture
def sink(tmp_path) -> Iterator[SmtpSink]:
    with SmtpSink(tmp_path / "sink") as s:
        yield s


@pytest.fixture
def relay_factory(tmp_path, sink):
    """make(allow=[...], overrides=None, start=True) -> a RelayNode whose
    route for dest.example is the sink, with its control process running."""
    nodes: list[RelayNode] = []

    def make(allow=(), overrides=None, start=True) -> RelayNode:
        assert not nodes, "one node per test (Node.create uses tmp_path/node)"
        node = RelayNode.create(
            tmp_path,
            routes={"dest.example": sink.address},
            workers=2,
            control=True,
            overrides=overrides,
        )
        nodes.append(node)
        for network in allow:
            node.allow(network)
        if start:
            node.start()
        return node

    yield make
    for node in nodes:
        node.stop()
