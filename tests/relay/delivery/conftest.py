"""Fixtures for delivery tests: loopback DNS, test MX hosts, a spool world."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from delivery_helpers import World

from support.dns import DnsServer
from support.mx import MxOptions, TestMx


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


@pytest.fixture
def make_mx() -> Iterator[Callable[..., TestMx]]:
    started: list[TestMx] = []

    def make(**options) -> TestMx:
        mx = TestMx(MxOptions(**options)).start()
        started.append(mx)
        return mx

    yield make
    for mx in started:
        mx.stop()


@pytest.fixture
def world(tmp_path, dns_server) -> World:
    return World(tmp_path, dns_server)
