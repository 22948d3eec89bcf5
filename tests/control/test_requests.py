"""Enablement requests: validation, decisions, snapshot, audit and notices."""

from __future__ import annotations

import email
import hashlib
import hmac
import http.server
import json
import threading

import pytest
from sqlalchemy import func, select

from support.store import seed_accounts, write_config
from tlsrelay import config
from tlsrelay.control import accounts, db, enablement, lists
from tlsrelay.control.errors import Conflict, Forbidden, Invalid, NotFound
from tlsrelay.relay.spool import Spool

STAFF = accounts.operator("cli:test")


@pytest.fixture
def world(settings):
    seed_accounts(settings)
    return settings


def actor(settings, name):
    with db.transaction(settings) as session:
        return accounts.actor_of(accounts.user_by_name(session, name))


def submit(settings, who=STAFF, **fields):
    fields.setdefault("location", "LON")
    fields.setdefault("server_ip", "8.8.8.8")
    if who.is_staff:
        fields.setdefault("customer", "acme")
    return enablement.submit_and_notify(settings, who, enablement.Submission(**fields))


def counts(settings) -> tuple[int, int, int, int]:
    with db.transaction(settings) as session:
        return tuple(
            session.scalar(select(func.count()).select_from(table))
            for table in (db.Request, db.RequestIp, db.Server, db.AuditRecord)
        )


REFUSALS = [
    (
        {"server_ip": "10.1.2.3"},
        ["server IP 10.1.2.3 is a private range; only public addresses can relay"],
    ),
    (
        {"server_ip": "127.0.0.1"},
        ["server IP 127.0.0.1 is a loopback range; only public addresses can relay"],
    ),
    (
        {"server_ip": "8.8.8"},
        ["server IP: '8.8.8' is not an IPv4 or IPv6 address or network"],
    ),
    (
        {"server_ip": "8.8.8.0/24"},
        ["server IP '8.8.8.0/24' must be one address, not a network"],
    ),
    (
        {"relay_host": "fra-tls.relay.example:587"},
        [
            "relay host 'fra-tls.relay.example:587' is not the relay of location "
            "LON; use the relay of your server's location: "
            "lon-tls.relay.example:587"
        ],
    ),
    (
        {"relay_host": "lon-tls.relay.example:25"},
        [
            "relay host 'lon-tls.relay.example:25' is not the relay of location "
            "LON; use the relay of your server's location: "
            "lon-tls.relay.example:587"
        ],
    ),
    (
        {"location": "XYZ"},
        ["unknown location 'XYZ'; choose one of: CHI, FRA, JHB, LAX, LON, RES, SAO"],
    ),
    (
        {"ips": ["8.8.8.8"]},
        ["8.8.8.8 is named twice in this request"],
    ),
    (
        {"ips": ["8.0.0.0/8"]},
        ["mailing IP 8.0.0.0/8 is too large; ask for /24 or smaller networks"],
    ),
    (
        {"ips": ["0.0.0.0/0"]},
        ["mailing IP: '0.0.0.0/0' would let the whole internet relay; refused"],
    ),
    (
        {"ips": [f"9.9.9.{i}" for i in range(16)]},
        ["a request may name at most 16 IPs; this one names 17"],
    ),
    (
        {"server_ip": "192.168.1.1", "relay_host": "chi-tls.relay.example"},
        [
            "relay host 'chi-tls.relay.example' is not the relay of location LON; "
            "use the relay of your server's location: lon-tls.relay.example:587",
            "server IP 192.168.1.1 is a private range; only public addresses can relay",
        ],
    ),
]


@pytest.mark.parametrize(("fields", "problems"), REFUSALS)
def test_refusals_are_precise_and_store_nothing(world, fields, problems):
    before = counts(world)
    with pytest.raises(Invalid) as info:
        submit(world, **fields)
    assert info.value.problems == problems
    assert counts(world) == before


def test_listed_and_pending_ips_are_refused(world):
    with db.transaction(world) as session:
        lists.add(session, "LON", lists.parse_network("1.1.1.0/24"), "test")
    first = submit(world, server_ip="8.8.8.8", ips=["8.8.4.4"])
    before = counts(world)
    with pytest.raises(Invalid) as info:
        submit(world, customer="bravo", server_ip="1.1.1.1", ips=["8.8.4.4"])
    assert info.value.problems == [
        "1.1.1.1 is already on the LON list (1.1.1.0/24)",
        f"8.8.4.4 is already in pending request {first['id']}",
    ]
    assert counts(world) == before
    # The same IP at another location is a different list.
    assert submit(world, location="FRA", server_ip="8.8.4.4")["status"] == "pending"


def test_relay_host_accepted_forms(world):
    for given in ("lon-tls.relay.example", "LON-TLS.relay.example.:587"):
        doc = submit(world, relay_host=given, server_ip=f"8.8.{len(given)}.1")
        assert doc["relay_host"] == "lon-tls.relay.example:587"


def test_private_ips_allowed_by_config(tmp_path, store_url):
    path = write_config(tmp_path, store_url, control={"allow_private_ips": True})
    settings = config.load(path)
    db.upgrade(settings)
    seed_accounts(settings)
    doc = submit(settings, server_ip="127.0.0.1", ips=["10.0.0.0/24"])
    assert doc["ips"] == ["127.0.0.1/32", "10.0.0.0/24"]


def snapshot(settings, location="LON"):
    with db.transaction(settings) as session:
        return lists.snapshot(session, location)


def test_lifecycle_pending_approved_revoked(world):
    alice = actor(world, "alice")
    doc = submit(world, who=alice, server_ip="8.8.8.8", ips=["2a00:1450::/48"])
    assert doc["status"] == "pending" and doc["customer"] == "acme"
    assert doc["submitted_by"] == "alice"
    snap = snapshot(world)
    assert (snap.allowed, snap.pending) == ([], ["2a00:1450::/48", "8.8.8.8/32"])

    with pytest.raises(Forbidden):
        enablement.decide_and_notify(world, alice, "approve", doc["id"])
    carol = actor(world, "carol")
    approved = enablement.decide_and_notify(world, carol, "approve", doc["id"])
    assert approved["status"] == "approved" and approved["decided_by"] == "carol"
    snap = snapshot(world)
    assert (snap.allowed, snap.pending) == (["2a00:1450::/48", "8.8.8.8/32"], [])
    with db.transaction(world) as session:
        entries = lists.entries(session, "LON")
        audit = [
            (a.actor, a.action, a.subject)
            for a in session.scalars(select(db.AuditRecord).order_by(db.AuditRecord.id))
        ]
    assert {(e.network, e.request_id, e.added_by) for e in entries} == {
        ("8.8.8.8/32", doc["id"], "carol"),
        ("2a00:1450::/48", doc["id"], "carol"),
    }
    assert ("carol", "request.approve", f"request {doc['id']}") in audit

    with pytest.raises(Conflict) as info:
        enablement.decide_and_notify(world, carol, "approve", doc["id"])
    assert str(info.value) == (
        f"request {doc['id']} is approved; only a pending request can be approved"
    )
    revoked = enablement.decide_and_notify(world, carol, "revoke", doc["id"], "abuse")
    assert (revoked["status"], revoked["reason"]) == ("revoked", "abuse")
    assert snapshot(world).allowed == []


def test_approval_is_one_transaction(world):
    doc = submit(world, server_ip="8.8.8.8", ips=["9.9.9.9"])
    # Someone lists one of the IPs by hand meanwhile: approval must fail whole.
    with db.transaction(world) as session:
        lists.add(session, "LON", lists.parse_network("9.9.9.9"), "someone")
    with pytest.raises(Conflict):
        enablement.decide_and_notify(world, STAFF, "approve", doc["id"])
    with db.transaction(world) as session:
        assert [e.network for e in lists.entries(session, "LON")] == ["9.9.9.9/32"]
        assert enablement.get(session, STAFF, doc["id"]).status == "pending"


def test_reject_needs_reason_and_clears_pending(world):
    doc = submit(world)
    with pytest.raises(Invalid) as info:
        enablement.decide_and_notify(world, STAFF, "reject", doc["id"], "  ")
    assert str(info.value) == "a rejection needs a reason the customer can act on"
    done = enablement.decide_and_notify(
        world, STAFF, "reject", doc["id"], "not your IP"
    )
    assert (done["status"], done["reason"]) == ("rejected", "not your IP")
    assert snapshot(world).pending == []
    with pytest.raises(Conflict):
        enablement.decide_and_notify(world, STAFF, "revoke", doc["id"])


def test_customers_see_only_their_requests(world):
    alice, bob = actor(world, "alice"), actor(world, "bob")
    doc = submit(world, who=alice)
    with db.transaction(world) as session:
        assert [r.id for r in enablement.visible(session, alice)] == [doc["id"]]
        assert enablement.visible(session, bob) == []
        with pytest.raises(NotFound):
            enablement.get(session, bob, doc["id"])
    with pytest.raises(NotFound):
        submit(world, who=bob, customer="acme", server_ip="8.8.4.4")


def notices_in(settings) -> list[email.message.Message]:
    spool = Spool(settings.spool.path)
    found = []
    for qid in spool.ids():
        envelope, _, _ = spool.read_envelope(qid)
        assert envelope.origin == "notice"
        found.append(email.message_from_bytes(spool.read_content(qid)))
    return found


def test_notice_mails_go_through_the_spool(world):
    doc = submit(world)
    enablement.decide_and_notify(world, STAFF, "approve", doc["id"])
    mails = notices_in(world)
    subjects = sorted(m["Subject"] for m in mails)
    assert subjects == [
        f"[tlsrelay] request {doc['id']} for LON approved: you can relay now",
        f"[tlsrelay] request {doc['id']} for LON received",
    ]
    approval = next(m for m in mails if "approved" in m["Subject"])
    assert approval["To"] == "ops@acme.test"
    assert approval["From"] == "postmaster@lon-1.test"
    text = approval.get_payload(decode=True).decode()
    assert "the relay accepts mail from these IPs now" in text
    assert "postqueue -f" in text


class Receiver(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_is_signed(world):
    server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    Receiver.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with db.transaction(world) as session:
            _, secret = accounts.add_customer(
                session,
                "hooked",
                "ops@hooked.test",
                f"http://127.0.0.1:{server.server_port}/hook",
            )
        doc = submit(world, customer="hooked")
        enablement.decide_and_notify(world, STAFF, "reject", doc["id"], "no")
    finally:
        server.shutdown()
        server.server_close()
    events = []
    for headers, body in Receiver.received:
        stamp = headers["X-Tlsrelay-Timestamp"]
        expected = hmac.new(
            secret.encode(), stamp.encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        assert headers["X-Tlsrelay-Signature"] == f"sha256={expected}"
        payload = json.loads(body)
        assert payload["request"]["id"] == doc["id"]
        events.append(payload["event"])
    assert events == ["request.submitted", "request.rejected"]
