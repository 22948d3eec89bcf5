"""Filtering lists: which networks may relay through which location.

Parses and checks IP addresses and CIDR networks, adds and removes list
entries, and builds a location's snapshot (allowed networks plus the IPs of
pending requests) for `relay.access.publish`. Every change bumps the store's
version in the same transaction, so the control process republishes within a
second.

A network is stored in canonical form (`203.0.113.5/32`, `2001:db8::/64`);
an IPv4-mapped IPv6 address is stored as the IPv4 address it maps. This
module never lets a /0 onto a list.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tlsrelay import config
from tlsrelay.control import db
from tlsrelay.control.errors import Conflict, Invalid, NotFound
from tlsrelay.relay import access

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str) -> Network:
    """TEXT as a network; a bare address becomes a /32 or /128."""
    text = text.strip()
    address, slash, prefix = text.partition("/")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise Invalid(f"{text!r} is not an IPv4 or IPv6 address or network") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        # A zone index names an interface of the machine that wrote it; peers
        # never match it, and Postfix's mynetworks refuses it too.
        raise Invalid(f"{text!r}: leave out the zone index (%{ip.scope_id})")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped and not slash:
        ip = ip.ipv4_mapped
    bits = 32 if ip.version == 4 else 128
    if slash and not (prefix.isdigit() and 0 <= int(prefix) <= bits):
        raise Invalid(f"{text!r}: the prefix length must be 0 to {bits}")
    length = int(prefix) if slash else bits
    if length == 0:
        raise Invalid(f"{text!r} would let the whole internet relay; refused")
    network = ipaddress.ip_network(f"{ip}/{length}", strict=False)
    if network.network_address != ip:
        raise Invalid(
            f"{text!r} has host bits set; did you mean {network} "
            f"or the single address {ip}?"
        )
    return network


# Why an address is not public, most specific first.
_NOT_PUBLIC = (
    ("is_unspecified", "the unspecified address"),
    ("is_loopback", "a loopback range"),
    ("is_link_local", "a link-local range"),
    ("is_multicast", "a multicast range"),
    ("is_private", "a private range"),
    ("is_reserved", "a reserved range"),
)

_DOCUMENTATION = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)


def why_not_public(network: Network) -> str | None:
    """None for globally routable unicast, else what kind of range it is."""
    if any(
        network.version == d.version and network.subnet_of(d) for d in _DOCUMENTATION
    ):
        return "a documentation range"
    for attribute, text in _NOT_PUBLIC:
        if getattr(network, attribute):
            return text
    if not network.is_global:
        return "not a public range"
    return None


def is_public(network: Network) -> bool:
    return why_not_public(network) is None


def private_warning(network: Network) -> str | None:
    kind = why_not_public(network)
    if kind is None:
        return None
    return (
        f"{network} is {kind}; a relay normally sees public addresses only, "
        "and a listed NAT or proxy address lets everyone behind it relay"
    )


def check_location(session: Session, code: str) -> db.Location:
    loc = session.get(db.Location, code.upper())
    if loc is None:
        known = ", ".join(session.scalars(select(db.Location.code).order_by("code")))
        raise NotFound(f"unknown location {code!r}; known locations: {known}")
    return loc


def overlapping(
    session: Session, location: str, network: Network
) -> list[db.ListEntry]:
    """Entries of LOCATION that contain, equal or lie inside NETWORK."""
    found = []
    for entry in session.scalars(
        select(db.ListEntry).where(db.ListEntry.location == location)
    ):
        other = ipaddress.ip_network(entry.network)
        if other.version == network.version and other.overlaps(network):
            found.append(entry)
    return found


def add(
    session: Session,
    location: str,
    network: Network,
    added_by: str,
    request_id: int | None = None,
) -> db.ListEntry:
    """Put NETWORK on LOCATION's list; an identical entry is a Conflict."""
    loc = check_location(session, location)
    for entry in overlapping(session, loc.code, network):
        if entry.network == str(network):
            raise Conflict(
                f"{network} is already on the {loc.code} list (added by "
                f"{entry.added_by} at {entry.added_at:%Y-%m-%d %H:%M:%S} UTC)"
            )
    entry = db.ListEntry(
        location=loc.code,
        network=str(network),
        added_by=added_by,
        added_at=db.utcnow(),
        request_id=request_id,
    )
    session.add(entry)
    db.bump_version(session)
    session.flush()
    return entry


def remove(session: Session, location: str, network: Network) -> db.ListEntry:
    loc = check_location(session, location)
    entry = session.scalars(
        select(db.ListEntry).where(
            db.ListEntry.location == loc.code, db.ListEntry.network == str(network)
        )
    ).first()
    if entry is None:
        raise NotFound(f"{network} is not on the {loc.code} list")
    session.delete(entry)
    db.bump_version(session)
    session.flush()
    return entry


def remove_request_entries(session: Session, request_id: int) -> int:
    result = session.execute(
        delete(db.ListEntry).where(db.ListEntry.request_id == request_id)
    )
    db.bump_version(session)
    return result.rowcount or 0


def entries(session: Session, location: str) -> list[db.ListEntry]:
    loc = check_location(session, location)
    return list(
        session.scalars(
            select(db.ListEntry)
            .where(db.ListEntry.location == loc.code)
            .order_by(db.ListEntry.added_at, db.ListEntry.id)
        )
    )


def entry_json(entry: db.ListEntry) -> dict:
    return {
        "location": entry.location,
        "network": entry.network,
        "added_by": entry.added_by,
        "added_at": entry.added_at.isoformat(),
        "request_id": entry.request_id,
    }


@dataclasses.dataclass(frozen=True)
class SnapshotData:
    location: str
    version: int
    allowed: list[str]
    pending: list[str]


def snapshot(session: Session, location: str) -> SnapshotData:
    """What the relays of LOCATION must know, read in one transaction."""
    code = location.upper()
    version = db.read_version(session)
    allowed = session.scalars(
        select(db.ListEntry.network).where(db.ListEntry.location == code)
    ).all()
    pending = session.scalars(
        select(db.RequestIp.network)
        .join(db.Request, db.Request.id == db.RequestIp.request_id)
        .where(db.Request.location == code, db.Request.status == db.PENDING)
    ).all()
    return SnapshotData(code, version, sorted(allowed), sorted(set(pending)))


def publish(settings: config.Settings, data: SnapshotData) -> Path:
    path = settings.snapshot_path(data.location)
    access.publish(path, data.location, data.allowed, data.pending, data.version)
    log.info(
        "published %s version %d: %d allowed, %d pending",
        path,
        data.version,
        len(data.allowed),
        len(data.pending),
    )
    return path


def publish_local(settings: config.Settings) -> Path | None:
    """Publish this node's location now, if the store says anything new."""
    with db.transaction(settings) as session:
        data = snapshot(session, settings.node.location)
    return publish(settings, data)


def publish_if_local(settings: config.Settings, location: str) -> None:
    """Publish now when LOCATION is this node's, rather than at the next poll.

    The control process polls the store too, so a failure here only delays
    the change by a poll interval; it never undoes the change.
    """
    if location.upper() != settings.node.location.upper():
        return
    try:
        publish_local(settings)
    except Exception:
        log.warning(
            "could not publish the %s snapshot now; the poller will",
            location,
            exc_info=True,
        )
