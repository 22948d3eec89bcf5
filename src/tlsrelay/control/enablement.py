"""Enablement requests: submit, validate, decide, revoke.

A request is the old support ticket as data: customer, server location,
relay host, the server's main IP, further mailing IPs and a note. The flow:

    submit  -> pending   its IPs get 450 4.7.1 (in the snapshot's "pending")
    approve -> approved  list entries + audit record, one transaction
    reject  -> rejected  with a reason
    revoke  -> revoked   list entries removed, audit record

Validation collects every fault with a precise message and stores nothing
when there is one. Customers see and act on their own requests only; a
request of another customer is "not found", never "forbidden", so ids leak
nothing. Staff decide. Every change bumps the store version, so relays see
it within a second. Notices go out after the commit (control/notices.py).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from tlsrelay import config
from tlsrelay.control import db, lists, notices
from tlsrelay.control.accounts import Actor, customer_by_name
from tlsrelay.control.errors import Conflict, Forbidden, Invalid, NotFound

log = logging.getLogger(__name__)

_PAST = {"approve": "approved", "reject": "rejected", "revoke": "revoked"}

# The largest network a customer may ask for in one line.
MAX_PREFIX = {4: 24, 6: 48}


@dataclass
class Submission:
    location: str
    server_ip: str
    ips: list[str] = field(default_factory=list)
    relay_host: str | None = None
    note: str = ""
    customer: str | None = None  # by name; staff and CLI only


def relay_host_with_port(settings: config.Settings, location: str) -> str:
    return f"{settings.relay_host(location)}:{settings.control.submission_port}"


# -- validation ----------------------------------------------------------------


def _parse_ip(
    settings: config.Settings, label: str, text: str, single: bool
) -> tuple[lists.Network | None, list[str]]:
    try:
        network = lists.parse_network(text)
    except Invalid as exc:
        return None, [f"{label}: {exc}"]
    problems = []
    full = 32 if network.version == 4 else 128
    if single and network.prefixlen != full:
        problems.append(f"{label} {text!r} must be one address, not a network")
    elif network.prefixlen < MAX_PREFIX[network.version]:
        problems.append(
            f"{label} {network} is too large; ask for /{MAX_PREFIX[network.version]} "
            "or smaller networks"
        )
    kind = lists.why_not_public(network)
    if kind and not settings.control.allow_private_ips:
        problems.append(
            f"{label} {network.network_address if single else network} is {kind}; "
            "only public addresses can relay"
        )
    return network, problems


def _check_relay_host(
    settings: config.Settings, location: str, given: str | None
) -> list[str]:
    if not given:
        return []
    expected = relay_host_with_port(settings, location)
    try:
        host, port = config.parse_hostport(
            given.strip(), settings.control.submission_port
        )
    except ValueError:
        host, port = "", 0
    host = host.strip("[]").rstrip(".").lower()
    if (
        host == settings.relay_host(location)
        and port == settings.control.submission_port
    ):
        return []
    return [
        f"relay host {given!r} is not the relay of location {location}; "
        f"use the relay of your server's location: {expected}"
    ]


def shown(net: lists.Network) -> str:
    """A single address without its /32 or /128, a network as it is."""
    full = 32 if net.version == 4 else 128
    return str(net.network_address) if net.prefixlen == full else str(net)


def _check_conflicts(
    session: Session, location: str, networks: list[lists.Network]
) -> list[str]:
    problems = []
    pending = session.execute(
        select(db.RequestIp.network, db.Request.id)
        .join(db.Request, db.Request.id == db.RequestIp.request_id)
        .where(db.Request.location == location, db.Request.status == db.PENDING)
    ).all()
    for net in networks:
        for entry in lists.overlapping(session, location, net):
            problems.append(
                f"{shown(net)} is already on the {location} list ({entry.network})"
            )
        for other, request_id in pending:
            other_net = ipaddress.ip_network(other)
            if other_net.version == net.version and other_net.overlaps(net):
                problems.append(
                    f"{shown(net)} is already in pending request {request_id}"
                )
    return problems


def validate(
    session: Session, settings: config.Settings, sub: Submission
) -> tuple[db.Location | None, list[lists.Network], list[str]]:
    """The location, the networks (main IP first) and every problem found."""
    problems: list[str] = []
    location = session.get(db.Location, (sub.location or "").strip().upper())
    if location is None:
        known = ", ".join(session.scalars(select(db.Location.code).order_by("code")))
        problems.append(f"unknown location {sub.location!r}; choose one of: {known}")
    else:
        problems += _check_relay_host(settings, location.code, sub.relay_host)

    networks: list[lists.Network] = []
    main, found = _parse_ip(settings, "server IP", sub.server_ip or "", single=True)
    problems += found
    if main is not None:
        networks.append(main)
    for text in sub.ips:
        net, found = _parse_ip(settings, "mailing IP", text, single=False)
        problems += found
        if net is None:
            continue
        if net in networks:
            problems.append(f"{shown(net)} is named twice in this request")
            continue
        networks.append(net)

    count = 1 + len(sub.ips)
    limit = settings.control.max_ips_per_request
    if count > limit:
        problems.append(
            f"a request may name at most {limit} IPs; this one names {count}"
        )
    if len(sub.note) > 2000:
        problems.append("the note is longer than 2000 characters")
    if location is not None and not problems:
        problems += _check_conflicts(session, location.code, networks)
    return location, networks, problems


# -- use cases ---------------------------------------------------------------


def _customer_for(session: Session, actor: Actor, name: str | None) -> db.Customer:
    if actor.is_staff:
        if not name:
            raise Invalid("say which customer the request is for")
        return customer_by_name(session, name)
    customer = session.get(db.Customer, actor.customer_id)
    if customer is None or (name and name != customer.name):
        raise NotFound(f"no customer named {name!r}")
    return customer


def submit(
    session: Session, settings: config.Settings, actor: Actor, sub: Submission
) -> db.Request:
    customer = _customer_for(session, actor, sub.customer)
    location, networks, problems = validate(session, settings, sub)
    if problems:
        raise Invalid(problems)
    assert location is not None
    main_ip = str(networks[0].network_address)
    server = session.scalar(
        select(db.Server).where(
            db.Server.customer_id == customer.id, db.Server.main_ip == main_ip
        )
    )
    if server is None:
        server = db.Server(
            customer_id=customer.id,
            location=location.code,
            main_ip=main_ip,
            created_at=db.utcnow(),
        )
        session.add(server)
        session.flush()
    server.location = location.code
    request = db.Request(
        customer_id=customer.id,
        server_id=server.id,
        location=location.code,
        relay_host=relay_host_with_port(settings, location.code),
        status=db.PENDING,
        note=sub.note.strip(),
        reason="",
        submitted_by=actor.name,
        submitted_at=db.utcnow(),
    )
    session.add(request)
    session.flush()
    for position, net in enumerate(networks):
        session.add(
            db.RequestIp(request_id=request.id, position=position, network=str(net))
        )
    db.audit(
        session,
        actor.name,
        "request.submit",
        f"request {request.id}",
        f"customer={customer.name} location={location.code} "
        f"ips={','.join(str(n) for n in networks)}",
    )
    db.bump_version(session)
    session.flush()
    return request


def get(session: Session, actor: Actor, request_id: int) -> db.Request:
    request = session.get(db.Request, request_id)
    if request is None or not (
        actor.is_staff or request.customer_id == actor.customer_id
    ):
        raise NotFound(f"no request {request_id}")
    return request


def visible(
    session: Session, actor: Actor, status: str | None = None
) -> list[db.Request]:
    query = select(db.Request).order_by(db.Request.id)
    if not actor.is_staff:
        query = query.where(db.Request.customer_id == actor.customer_id)
    if status:
        if status not in db.STATUSES:
            raise Invalid(f"status must be one of {', '.join(db.STATUSES)}")
        query = query.where(db.Request.status == status)
    return list(session.scalars(query))


def _decision(
    session: Session, actor: Actor, request_id: int, expected: str, verb: str
) -> db.Request:
    if not actor.is_staff:
        raise Forbidden(f"only staff may {verb} requests")
    request = get(session, actor, request_id)
    if request.status != expected:
        raise Conflict(
            f"request {request_id} is {request.status}; only a {expected} "
            f"request can be {_PAST[verb]}"
        )
    return request


def _decide(request: db.Request, actor: Actor, status: str, reason: str) -> None:
    request.status = status
    request.reason = reason
    request.decided_by = actor.name
    request.decided_at = db.utcnow()


def networks_of(session: Session, request: db.Request) -> list[str]:
    return list(
        session.scalars(
            select(db.RequestIp.network)
            .where(db.RequestIp.request_id == request.id)
            .order_by(db.RequestIp.position)
        )
    )


def approve(session: Session, actor: Actor, request_id: int) -> db.Request:
    """List every IP of the request and audit it, in the caller's transaction."""
    request = _decision(session, actor, request_id, db.PENDING, "approve")
    for text in networks_of(session, request):
        lists.add(
            session,
            request.location,
            ipaddress.ip_network(text),
            added_by=actor.name,
            request_id=request.id,
        )
    _decide(request, actor, db.APPROVED, "")
    db.audit(
        session,
        actor.name,
        "request.approve",
        f"request {request.id}",
        f"location={request.location} ips={','.join(networks_of(session, request))}",
    )
    session.flush()
    return request


def reject(session: Session, actor: Actor, request_id: int, reason: str) -> db.Request:
    reason = (reason or "").strip()
    if not actor.is_staff:
        raise Forbidden("only staff may reject requests")
    if not reason:
        raise Invalid("a rejection needs a reason the customer can act on")
    request = _decision(session, actor, request_id, db.PENDING, "reject")
    _decide(request, actor, db.REJECTED, reason)
    db.bump_version(session)
    db.audit(
        session,
        actor.name,
        "request.reject",
        f"request {request.id}",
        f"reason={reason}",
    )
    session.flush()
    return request


def revoke(
    session: Session, actor: Actor, request_id: int, reason: str = ""
) -> db.Request:
    request = _decision(session, actor, request_id, db.APPROVED, "revoke")
    removed = lists.remove_request_entries(session, request.id)
    _decide(request, actor, db.REVOKED, (reason or "").strip())
    db.audit(
        session,
        actor.name,
        "request.revoke",
        f"request {request.id}",
        f"location={request.location} entries_removed={removed}",
    )
    session.flush()
    return request


def request_json(session: Session, request: db.Request) -> dict:
    customer = session.get(db.Customer, request.customer_id)
    ips = networks_of(session, request)
    return {
        "id": request.id,
        "status": request.status,
        "customer": customer.name if customer else None,
        "location": request.location,
        "relay_host": request.relay_host,
        "server_ip": ips[0].split("/")[0] if ips else None,
        "ips": ips,
        "note": request.note,
        "reason": request.reason,
        "submitted_by": request.submitted_by,
        "submitted_at": request.submitted_at.isoformat(),
        "decided_by": request.decided_by,
        "decided_at": request.decided_at.isoformat() if request.decided_at else None,
    }


# -- with the store and notices ---------------------------------------------------

_EVENTS = {
    "approve": (approve, "approved"),
    "reject": (reject, "rejected"),
    "revoke": (revoke, "revoked"),
}


def _customer_doc(session: Session, request: db.Request) -> dict:
    customer = session.get(db.Customer, request.customer_id)
    return {
        "email": customer.email,
        "webhook_url": customer.webhook_url,
        "webhook_secret": customer.webhook_secret,
    }


def submit_and_notify(settings: config.Settings, actor: Actor, sub: Submission) -> dict:
    """Submit in one transaction, then send the "received" notice."""
    with db.transaction(settings) as session:
        request = submit(session, settings, actor, sub)
        document = request_json(session, request)
        customer = _customer_doc(session, request)
    lists.publish_if_local(settings, document["location"])
    notices.notify(settings, "submitted", document, customer)
    return document


def decide_and_notify(
    settings: config.Settings,
    actor: Actor,
    verb: str,
    request_id: int,
    reason: str = "",
) -> dict:
    """Approve, reject or revoke in one transaction, then notify the customer."""
    action, event = _EVENTS[verb]
    with db.transaction(settings) as session:
        if verb == "approve":
            request = action(session, actor, request_id)
        else:
            request = action(session, actor, request_id, reason)
        document = request_json(session, request)
        customer = _customer_doc(session, request)
    lists.publish_if_local(settings, document["location"])
    notices.notify(settings, event, document, customer)
    return document
