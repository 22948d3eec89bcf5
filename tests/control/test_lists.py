"""Filtering lists in the store, `allow` and `db upgrade` on both backends."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import inspect, select

from tlsrelay import config
from tlsrelay.cli.main import main
from tlsrelay.control import db, lists
from tlsrelay.control.errors import Invalid
from tlsrelay.relay import access


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("203.0.113.5", "203.0.113.5/32"),
        (" 198.51.100.0/24 ", "198.51.100.0/24"),
        ("2001:DB8::1", "2001:db8::1/128"),
        ("2001:db8::/64", "2001:db8::/64"),
        ("::ffff:192.0.2.9", "192.0.2.9/32"),
    ],
)
def test_parse_network_canonical(text, canonical):
    assert str(lists.parse_network(text)) == canonical


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.0.0.0/0", "'0.0.0.0/0' would let the whole internet relay; refused"),
        ("::/0", "'::/0' would let the whole internet relay; refused"),
        ("mail.example.com", "'mail.example.com' is not an IPv4 or IPv6 address"),
        ("203.0.113.5/33", "'203.0.113.5/33': the prefix length must be 0 to 32"),
        ("203.0.113.5/x", "'203.0.113.5/x': the prefix length must be 0 to 32"),
        (
            "203.0.113.5/24",
            "'203.0.113.5/24' has host bits set; did you mean 203.0.113.0/24 "
            "or the single address 203.0.113.5?",
        ),
        ("256.1.1.1", "'256.1.1.1' is not an IPv4 or IPv6 address or network"),
    ],
)
def test_parse_network_refusals(text, message):
    with pytest.raises(Invalid) as info:
        lists.parse_network(text)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("10.1.2.3", "private"),
        ("127.0.0.1", "loopback"),
        ("169.254.0.1", "link-local"),
        ("192.0.2.1", "documentation"),
        ("fe80::1", "link-local"),
        ("fd00::/8", "private"),
    ],
)
def test_private_ranges_warn(text, kind):
    warning = lists.private_warning(lists.parse_network(text))
    assert warning is not None and kind in warning


def test_public_ranges_do_not_warn():
    assert lists.private_warning(lists.parse_network("8.8.8.0/24")) is None
    assert lists.private_warning(lists.parse_network("2a00:1450::/32")) is None


def test_upgrade_creates_tables_and_seeds_locations(settings):
    engine = db.engine(settings)
    tables = set(inspect(engine).get_table_names())
    assert {"locations", "list_entries", "requests", "audit", "users"} <= tables
    with db.transaction(settings) as session:
        hosts = {
            loc.code: loc.relay_host for loc in session.scalars(select(db.Location))
        }
    assert hosts == {
        code: f"{code.lower()}-tls.relay.example"
        for code in ("CHI", "LAX", "RES", "LON", "FRA", "SAO", "JHB")
    }
    db.upgrade(settings)  # idempotent


def test_snapshot_follows_adds_and_removes(settings):
    net = lists.parse_network("8.8.4.4")
    with db.transaction(settings) as session:
        before = lists.snapshot(session, "LON").version
        lists.add(session, "lon", net, "test")
    with db.transaction(settings) as session:
        snap = lists.snapshot(session, "LON")
        other = lists.snapshot(session, "FRA")
    assert snap.allowed == ["8.8.4.4/32"] and snap.version > before
    assert other.allowed == []
    with db.transaction(settings) as session:
        lists.remove(session, "LON", net)
    with db.transaction(settings) as session:
        assert lists.snapshot(session, "LON").allowed == []


def run(capsys, config_path, *argv):
    status = main(["-c", str(config_path), *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_allow_cli_add_list_remove(capsys, config_path):
    status, out, err = run(capsys, config_path, "allow", "add", "LON", "8.8.8.8")
    assert (status, out, err) == (0, "added 8.8.8.8/32 to the LON list\n", "")

    status, out, err = run(capsys, config_path, "allow", "list", "LON", "--json")
    entries = json.loads(out)
    assert [e["network"] for e in entries] == ["8.8.8.8/32"]
    assert entries[0]["added_by"].startswith("cli")
    assert entries[0]["request_id"] is None

    # A change to this node's location is in the local snapshot at once.
    settings = config.load(config_path)
    reader = access.AccessList(settings.snapshot_path("LON"))
    assert reader.decide("8.8.8.8") == access.LISTED
    assert reader.decide("8.8.4.4") == access.UNKNOWN

    status, out, err = run(capsys, config_path, "allow", "remove", "LON", "8.8.8.8")
    assert (status, out) == (0, "removed 8.8.8.8/32 from the LON list\n")
    reader.refresh(force=True)
    assert reader.decide("8.8.8.8") == access.UNKNOWN


def test_allow_cli_refusals(capsys, config_path):
    assert run(capsys, config_path, "allow", "add", "LON", "8.8.8.0/24")[0] == 0
    cases = [
        (
            ("allow", "add", "LON", "8.8.8.0/24"),
            "tlsrelay: 8.8.8.0/24 is already on the LON list (added by ",
        ),
        (
            ("allow", "add", "LON", "0.0.0.0/0"),
            "tlsrelay: '0.0.0.0/0' would let the whole internet relay; refused\n",
        ),
        (
            ("allow", "add", "XYZ", "8.8.8.8"),
            "tlsrelay: unknown location 'XYZ'; known locations: CHI, FRA, JHB, "
            "LAX, LON, RES, SAO\n",
        ),
        (
            ("allow", "remove", "LON", "9.9.9.9"),
            "tlsrelay: 9.9.9.9/32 is not on the LON list\n",
        ),
    ]
    for argv, message in cases:
        status, out, err = run(capsys, config_path, *argv)
        assert status == 1 and out == ""
        assert err.startswith(message), err


def test_allow_cli_warns_on_private_range(capsys, config_path):
    status, out, err = run(capsys, config_path, "allow", "add", "LON", "10.0.0.0/8")
    assert status == 0
    assert err.startswith("tlsrelay: warning: 10.0.0.0/8 is a private range")


def test_allow_list_filter(capsys, config_path):
    run(capsys, config_path, "allow", "add", "LON", "8.8.8.0/24")
    run(capsys, config_path, "allow", "add", "LON", "1.1.1.1")
    status, out, _ = run(
        capsys, config_path, "allow", "list", "LON", "8.8.8.8", "--json"
    )
    assert [e["network"] for e in json.loads(out)] == ["8.8.8.0/24"]


def test_db_upgrade_command(capsys, config_path):
    status, out, err = run(capsys, config_path, "db", "upgrade")
    assert status == 0 and "is at the newest schema" in out
