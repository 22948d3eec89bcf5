"""`client check`, configuration part: cases 17 and 18 and the other faults.

Each test writes a real Postfix config tree (Debian's packaged files plus
the case's lines), lets Postfix's postconf/postmap read it, and compares the
checker's findings (severity, code, file:line, fix) with the case.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.dns import DnsServer
from tlsrelay.client import check, resolve
from tlsrelay.client.rules import Relay
from tlsrelay.client.tools import Postfix

RELAY = "[relay.example.net]:587"


def faults(findings) -> list[tuple[str, str, str]]:
    """The findings that need action, as (severity, code, where)."""
    return [(f.severity, f.code, f.where) for f in findings if f.severity != "ok"]


def good_setup(tree, relay: str = RELAY) -> None:
    """A complete, correct customer setup, to which a test adds one fault."""
    transport = tree.write_map("transport", f"example.edu smtp:{relay}")
    tree.append(
        "smtp_tls_security_level = encrypt",
        f"transport_maps = hash:{transport}",
    )


@pytest.fixture
def case17_dns():
    # Case 17's DNS fixture: the provider's domain has an MX, the relay not.
    with DnsServer() as dns:
        dns.add("example.net", "MX", "10 mx.example.net.")
        dns.add("mx.example.net", "A", "192.0.2.80")
        dns.add("relay.example.net", "A", "192.0.2.25")
        yield dns


def config_findings(tree, dns, relay_host=None, location=None, domain="relay.example"):
    """Offline rules plus live MX lookups, without an SMTP session."""
    postfix = Postfix(tree.etc)
    view, notes = check.load_view(postfix)
    relay = Relay(**_relay(relay_host, location, domain, view))
    resolver = resolve.make_resolver(dns.nameserver) if dns else None
    mx = (lambda name: resolve.mx_hosts(resolver, name)) if dns else None
    return notes + check.offline_findings(view, relay, mx)


def _relay(relay_host, location, domain, view):
    from tlsrelay.client.rules import expected_relay

    relay = expected_relay(relay_host, location, domain, view.effective["relayhost"])
    assert relay is not None
    return {"host": relay.host, "port": relay.port}


# -- case 17: relayhost without brackets ---------------------------------------


def test_case17_a_no_brackets_is_a_warning_with_the_bracketed_fix(
    debian_tree, case17_dns
):
    good_setup(debian_tree)
    line = debian_tree.append("relayhost = relay.example.net:587")
    found = config_findings(debian_tree, case17_dns)
    main_cf = str(debian_tree.main_cf)
    assert faults(found) == [("warning", "no-brackets", f"{main_cf}:{line}")]
    (warning,) = [f for f in found if f.code == "no-brackets"]
    assert "triggers an MX lookup" in warning.message
    assert warning.fix == "relayhost = [relay.example.net]:587"
    assert ("example.net.", "MX") not in case17_dns.queries
    assert ("relay.example.net.", "MX") in case17_dns.queries


def test_case17_b_provider_domain_without_brackets_is_an_error(debian_tree, case17_dns):
    good_setup(debian_tree)
    line = debian_tree.append("relayhost = example.net:587")
    found = config_findings(debian_tree, case17_dns)
    main_cf = str(debian_tree.main_cf)
    assert faults(found) == [("error", "mx-elsewhere", f"{main_cf}:{line}")]
    (error,) = [f for f in found if f.code == "mx-elsewhere"]
    assert "mx.example.net" in error.message
    assert "not the relay" in error.message


def test_case17_b_with_the_relay_named_also_says_wrong_relay(debian_tree, case17_dns):
    good_setup(debian_tree)
    line = debian_tree.append("relayhost = example.net:587")
    found = config_findings(debian_tree, case17_dns, relay_host="relay.example.net:587")
    main_cf = str(debian_tree.main_cf)
    assert faults(found) == [
        ("error", "mx-elsewhere", f"{main_cf}:{line}"),
        ("error", "wrong-relay", f"{main_cf}:{line}"),
    ]
    assert {f.fix for f in found if f.severity == "error"} == {
        "relayhost = [relay.example.net]:587"
    }


def test_case17_c_brackets_and_587_is_all_right(debian_tree, case17_dns):
    good_setup(debian_tree)
    debian_tree.append("relayhost = [relay.example.net]:587")
    found = config_findings(debian_tree, case17_dns)
    assert faults(found) == []
    assert "relay-nexthop" in {f.code for f in found}
    assert case17_dns.queries == []  # bracketed: nothing to look up


def test_case17_d_brackets_without_port_is_port_25_error(debian_tree, case17_dns):
    good_setup(debian_tree)
    line = debian_tree.append("relayhost = [relay.example.net]")
    found = config_findings(debian_tree, case17_dns)
    main_cf = str(debian_tree.main_cf)
    assert faults(found) == [("error", "port-25", f"{main_cf}:{line}")]
    (error,) = [f for f in found if f.code == "port-25"]
    assert "587" in error.message and "smtp_tls_wrappermode = yes" in error.message
    assert error.fix == "relayhost = [relay.example.net]:587"


def test_case17_a_offline_still_warns(debian_tree):
    good_setup(debian_tree)
    debian_tree.append("relayhost = relay.example.net:587")
    found = config_findings(debian_tree, None)
    assert [f.code for f in found if f.severity != "ok"] == ["no-brackets"]
    assert "--offline" in found[0].message or any(
        "--offline" in f.message for f in found
    )


def test_relay_of_another_location_is_an_error(debian_tree):
    good_setup(debian_tree, "[lon-tls.relay.example]:587")
    line = debian_tree.append("relayhost = [lax-tls.relay.example]:587")
    found = config_findings(debian_tree, None, location="LON")
    main_cf = str(debian_tree.main_cf)
    assert faults(found) == [("error", "other-location", f"{main_cf}:{line}")]
    (error,) = [f for f in found if f.severity == "error"]
    assert "LAX" in error.message and "LON" in error.message
    assert error.fix == "relayhost = [lon-tls.relay.example]:587"


def test_port_465_needs_wrappermode(debian_tree):
    good_setup(debian_tree, "[relay.example.net]:465")
    debian_tree.append("relayhost = [relay.example.net]:465")
    found = config_findings(debian_tree, None)
    assert [f.code for f in found if f.severity != "ok"] == ["wrappermode-missing"]
    debian_tree.append("smtp_tls_wrappermode = yes")
    assert faults(config_findings(debian_tree, None)) == []


# -- case 18: transport map lines ------------------------------------------------


CASE18_MAP = (
    "example.org   [relay.example.net]:587",
    "example.com   smtp: relay.example.net:587",
    "postmap /etc/postfix/transport",
    "example.edu   smtp:[relay.example.net]:587",
    ".example.edu  smtp:[relay.example.net]:587",
    "example.info  smtp:[relay.example.net:587]",
)


def test_case18_transport_map_lines(debian_tree):
    transport = debian_tree.write_map("transport", *CASE18_MAP)
    # The map was edited after postmap ran: Postfix still reads the old .db.
    db_time = Path(f"{transport}.db").stat().st_mtime
    os.utime(transport, (db_time + 60, db_time + 60))
    debian_tree.append(
        "relayhost = [relay.example.net]:587",
        "smtp_tls_security_level = encrypt",
        f"transport_maps = hash:{transport}",
    )
    found = config_findings(debian_tree, None)
    t = str(transport)
    assert faults(found) == [
        ("warning", "map-stale", t),
        ("error", "map-no-transport", f"{t}:1"),
        ("error", "map-space-after-transport", f"{t}:2"),
        ("error", "map-command", f"{t}:3"),
        ("error", "port-in-brackets", f"{t}:6"),
    ]
    by_code = {f.code: f for f in found}
    assert by_code["map-no-transport"].fix == "example.org smtp:[relay.example.net]:587"
    assert "service" in by_code["map-no-transport"].message
    assert by_code["map-space-after-transport"].fix == (
        "example.com smtp:[relay.example.net]:587"
    )
    assert "shell command" in by_code["map-command"].message
    assert f"postmap {t}" in by_code["map-command"].fix
    assert by_code["port-in-brackets"].fix == (
        "example.info smtp:[relay.example.net]:587"
    )
    assert by_code["map-stale"].fix == f"postmap {t} && postfix reload"
    # D and E are fine.
    assert [(f.code, f.line) for f in found if f.file == t and f.severity == "ok"] == [
        ("relay-nexthop", 4),
        ("relay-nexthop", 5),
    ]


def test_case18_checker_never_edits_the_map(debian_tree):
    transport = debian_tree.write_map("transport", *CASE18_MAP)
    debian_tree.append(f"transport_maps = hash:{transport}", "relayhost = " + RELAY)
    before = (transport.read_bytes(), debian_tree.main_cf.read_bytes())
    config_findings(debian_tree, None)
    assert (transport.read_bytes(), debian_tree.main_cf.read_bytes()) == before


# -- other faults ----------------------------------------------------------------


def test_transport_maps_missing_is_a_warning(debian_tree):
    debian_tree.append("relayhost = " + RELAY, "smtp_tls_security_level = encrypt")
    assert faults(config_findings(debian_tree, None)) == [
        ("warning", "transport-maps-missing", str(debian_tree.main_cf))
    ]


def test_transport_maps_pointing_at_a_missing_file(debian_tree):
    line = debian_tree.append(
        "relayhost = " + RELAY,
        "smtp_tls_security_level = encrypt",
        f"transport_maps = hash:{debian_tree.etc}/nosuch",
    )
    assert faults(config_findings(debian_tree, None)) == [
        ("error", "map-file-missing", f"{debian_tree.main_cf}:{line + 2}")
    ]


def test_map_never_compiled(debian_tree):
    transport = debian_tree.write_map(
        "transport", f"a.example smtp:{RELAY}", compile=False
    )
    debian_tree.append(
        "relayhost = " + RELAY,
        "smtp_tls_security_level = encrypt",
        f"transport_maps = hash:{transport}",
    )
    (fault,) = faults(config_findings(debian_tree, None))
    assert fault[:2] == ("error", "map-not-compiled")


def test_map_type_this_postfix_lacks(debian_tree):
    # Debian's Postfix has hash; lmdb comes only with the postfix-lmdb package.
    assert "lmdb" not in Postfix(debian_tree.etc).map_types()
    transport = debian_tree.write_map("transport", f"a.example smtp:{RELAY}")
    debian_tree.append(
        "relayhost = " + RELAY,
        "smtp_tls_security_level = encrypt",
        f"transport_maps = lmdb:{transport}",
    )
    found = config_findings(debian_tree, None)
    assert [f.code for f in found if f.severity != "ok"] == ["map-type-unsupported"]
    assert found[[f.code for f in found].index("map-type-unsupported")].fix == (
        f"transport_maps = hash:{transport}"
    )


@pytest.mark.parametrize(
    "lines, code, severity",
    [
        ((), "tls-level-low", "error"),
        (("smtp_tls_security_level = may",), "tls-level-low", "error"),
        (("smtp_tls_security_level = none",), "tls-level-low", "error"),
        (("smtp_use_tls = yes",), "tls-level-low", "error"),
        (("smtp_enforce_tls = yes",), None, None),
        (("smtp_tls_security_level = encrypt",), None, None),
        (("smtp_tls_security_level = dane",), "tls-level-dane", "warning"),
        (
            ("smtp_tls_security_level = secure", "smtp_tls_CAfile = /nonexistent"),
            "tls-ca-missing",
            "error",
        ),
    ],
)
def test_tls_levels(debian_tree, lines, code, severity):
    transport = debian_tree.write_map("transport", f"a.example smtp:{RELAY}")
    debian_tree.append("relayhost = " + RELAY, f"transport_maps = hash:{transport}")
    debian_tree.append(*lines)
    found = faults(config_findings(debian_tree, None))
    assert [(s, c) for s, c, _ in found] == ([(severity, code)] if code else [])


def test_trailing_comment_in_a_map_line(debian_tree):
    transport = debian_tree.write_map(
        "transport", f"a.example smtp:{RELAY}   # to the relay"
    )
    debian_tree.append(
        "relayhost = " + RELAY,
        "smtp_tls_security_level = encrypt",
        f"transport_maps = hash:{transport}",
    )
    found = config_findings(debian_tree, None)
    assert faults(found) == [("error", "map-trailing-comment", f"{transport}:1")]
    assert found[[f.code for f in found].index("map-trailing-comment")].fix == (
        f"a.example smtp:{RELAY}"
    )
