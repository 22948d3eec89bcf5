"""The filtering-list snapshot: how listeners learn who may relay.

Listeners face the internet and hold no database credentials. The control
process reads the store and publishes each location's list as a JSON file,
replaced atomically (temporary file, fsync, rename). Listeners stat the file
at most every `check_interval_s` and reload it when it changed, so a change
reaches new sessions within a second and a store outage leaves the last
snapshot in force.

    {"location": "LON", "version": 7, "generated": 1733312345.1,
     "allowed": ["203.0.113.5/32", "2001:db8::/64"],
     "pending": ["198.51.100.7/32"]}

A listed network wins over a pending one. A node that never saw a snapshot
answers every sender "no-snapshot" (451 4.3.0).

This module never touches the store and never raises on a damaged file while
serving: it keeps the last good snapshot and logs a warning.
"""

from __future__ import annotations

import bisect
import ipaddress
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LISTED = "listed"
PENDING = "pending"
UNKNOWN = "unknown"
NO_SNAPSHOT = "no-snapshot"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def publish(
    path: str | os.PathLike[str],
    location: str,
    allowed: Iterable[str],
    pending: Iterable[str],
    version: int,
) -> None:
    """Write the snapshot of LOCATION atomically and durably."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "location": location.upper(),
        "version": version,
        "generated": time.time(),
        "allowed": sorted(str(_network(n)) for n in allowed),
        "pending": sorted(str(_network(n)) for n in pending),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(document, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _network(text: str) -> Network:
    return ipaddress.ip_network(text.strip(), strict=False)


class _NetworkSet:
    """Membership of an address in a set of networks, by bisection per prefix."""

    def __init__(self, networks: Iterable[Network]) -> None:
        # prefix length -> sorted network addresses (as ints), per IP version
        self._by_prefix: dict[tuple[int, int], list[int]] = {}
        for net in networks:
            key = (net.version, net.prefixlen)
            self._by_prefix.setdefault(key, []).append(int(net.network_address))
        for addrs in self._by_prefix.values():
            addrs.sort()

    def __contains__(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        bits = 32 if ip.version == 4 else 128
        value = int(ip)
        for (version, prefix), addrs in self._by_prefix.items():
            if version != ip.version:
                continue
            masked = value >> (bits - prefix) << (bits - prefix) if prefix else 0
            i = bisect.bisect_left(addrs, masked)
            if i < len(addrs) and addrs[i] == masked:
                return True
        return False


@dataclass(frozen=True)
class Snapshot:
    location: str
    version: int
    allowed: _NetworkSet
    pending: _NetworkSet

    @classmethod
    def parse(cls, data: bytes) -> Snapshot:
        doc = json.loads(data)
        return cls(
            location=str(doc["location"]),
            version=int(doc["version"]),
            allowed=_NetworkSet(_network(n) for n in doc["allowed"]),
            pending=_NetworkSet(_network(n) for n in doc["pending"]),
        )

    def decide(self, ip: str) -> str:
        addr = ipaddress.ip_address(ip)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        if addr in self.allowed:
            return LISTED
        if addr in self.pending:
            return PENDING
        return UNKNOWN


class AccessList:
    """The listener's view of one location's snapshot file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        check_interval_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.check_interval_s = check_interval_s
        self._clock = clock
        self._next_check = 0.0
        self._stamp: tuple[int, int, int] | None = None
        self.snapshot: Snapshot | None = None

    def decide(self, ip: str) -> str:
        """LISTED, PENDING, UNKNOWN or NO_SNAPSHOT for a peer address."""
        self.refresh()
        if self.snapshot is None:
            return NO_SNAPSHOT
        return self.snapshot.decide(ip)

    def refresh(self, force: bool = False) -> None:
        now = self._clock()
        if not force and now < self._next_check:
            return
        self._next_check = now + self.check_interval_s
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            self.snapshot = Snapshot.parse(self.path.read_bytes())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "snapshot %s unreadable, keeping the last one: %s", self.path, exc
            )
            return
        self._stamp = stamp
        log.info("snapshot %s version %d loaded", self.path, self.snapshot.version)
