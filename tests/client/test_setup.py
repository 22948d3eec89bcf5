"""`client setup` on real Postfix config trees (Debian's files, RHEL's layout).

Every change must come from postconf -e/-X, a second run must change
nothing, --dry-run must print a diff and touch nothing, and a tree set up by
it must pass `client check --offline`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from tlsrelay.cli.main import main
from tlsrelay.client import check, setup
from tlsrelay.client.rules import Relay
from tlsrelay.client.tools import DEBIAN, RHEL, Postfix, detect_layout

RELAY = Relay("lon-tls.relay.example", 587)
NOW = dt.datetime(2026, 12, 4, 10, 15, 0, tzinfo=dt.UTC)


def snapshot(directory):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir()}


def run_setup(tree, postfix=None, layout=DEBIAN, **options):
    options.setdefault("reload", False)
    return setup.run(
        postfix or Postfix(tree.etc),
        layout,
        setup.SetupOptions(RELAY, **options),
        clock=lambda: NOW,
    )


def test_dry_run_prints_a_diff_and_changes_nothing(debian_tree):
    before = snapshot(debian_tree.etc)
    result = run_setup(debian_tree, domains=("example.com",), dry_run=True)
    assert snapshot(debian_tree.etc) == before
    assert not result.changed and result.backups == []
    main_cf = debian_tree.main_cf
    assert f"--- {main_cf} (now)\n+++ {main_cf} (after setup)\n" in result.diff
    for line in (
        "+relayhost = [lon-tls.relay.example]:587",
        "+smtp_tls_security_level = encrypt",
        "+smtp_tls_CAfile = /etc/ssl/certs/ca-certificates.crt",
        f"+transport_maps = hash:{debian_tree.etc}/transport",
        "+example.com smtp:[lon-tls.relay.example]:587",
    ):
        assert line in result.diff.splitlines()


def test_setup_applies_backs_up_and_a_second_run_changes_nothing(debian_tree):
    original = debian_tree.main_cf.read_bytes()
    result = run_setup(debian_tree, domains=("example.com", ".example.com"))
    assert result.changed
    stamp = "20261204T101500Z"
    assert [p.name for p in result.backups] == [f"main.cf.tlsrelay-{stamp}"]
    assert result.backups[0].read_bytes() == original

    postfix = Postfix(debian_tree.etc)
    explicit = postfix.explicit()
    assert explicit["relayhost"] == "[lon-tls.relay.example]:587"
    assert explicit["smtp_tls_security_level"] == "encrypt"
    assert explicit["transport_maps"] == f"hash:{debian_tree.etc}/transport"
    ref = explicit["transport_maps"]
    for key in ("example.com", ".example.com"):
        assert postfix.query(key, ref) == "smtp:[lon-tls.relay.example]:587"
    assert "confirmed with postconf -x and postmap -q" in result.steps

    before = snapshot(debian_tree.etc)
    again = run_setup(debian_tree, domains=("example.com", ".example.com"))
    assert (again.changed, again.diff, again.steps) == (
        False,
        "",
        ["nothing to change"],
    )
    assert snapshot(debian_tree.etc) == before

    report = check.run(
        postfix,
        check.CheckOptions(relay_host="lon-tls.relay.example:587", offline=True),
    )
    assert report.ok, report.findings


def test_setup_never_writes_main_cf_text_itself(debian_tree, monkeypatch):
    # Every main.cf change must come from postconf: with postconf -e made a
    # no-op, setup must fail its read-back instead of having edited the file.
    original = debian_tree.main_cf.read_bytes()
    monkeypatch.setattr(Postfix, "set", lambda self, settings: None)
    with pytest.raises(setup.SetupError, match="does not read back"):
        run_setup(debian_tree)
    assert debian_tree.main_cf.read_bytes() == original


def test_setup_refuses_without_write_rights(debian_tree):
    before = snapshot(debian_tree.etc)
    with pytest.raises(setup.SetupError, match="no permission to change .*root"):
        setup.run(
            Postfix(debian_tree.etc),
            DEBIAN,
            setup.SetupOptions(RELAY, reload=False),
            writable=lambda path: path != debian_tree.main_cf,
        )
    assert snapshot(debian_tree.etc) == before


def test_setup_repairs_a_broken_transport_file(debian_tree):
    transport = debian_tree.write_map(
        "transport",
        "example.org   [relay.example.net]:587",
        "postmap /etc/postfix/transport",
        "old.example   smtp:[lax-tls.relay.example]:587",
        "local.example local:",
    )
    run_setup(debian_tree, domains=("example.com",))
    assert transport.read_text().splitlines() == [
        "# disabled by tlsrelay client setup: example.org   [relay.example.net]:587",
        "# disabled by tlsrelay client setup: postmap /etc/postfix/transport",
        "old.example smtp:[lon-tls.relay.example]:587",
        "local.example local:",
        "example.com smtp:[lon-tls.relay.example]:587",
    ]
    assert [p.name for p in debian_tree.etc.glob("transport.tlsrelay-*")] == [
        "transport.tlsrelay-20261204T101500Z"
    ]


def test_port_465_sets_wrappermode_and_587_removes_it(debian_tree):
    postfix = Postfix(debian_tree.etc)
    options = setup.SetupOptions(Relay(RELAY.host, 465), reload=False)
    setup.run(postfix, DEBIAN, options, clock=lambda: NOW)
    assert postfix.explicit()["smtp_tls_wrappermode"] == "yes"
    options = setup.SetupOptions(RELAY, reload=False)
    result = setup.run(postfix, DEBIAN, options, clock=lambda: NOW)
    assert "smtp_tls_wrappermode" not in postfix.explicit()
    assert "postconf -X smtp_tls_wrappermode" in result.steps


def test_verify_uses_level_secure_and_the_given_ca(debian_tree, tmp_path):
    ca = tmp_path / "provider-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    result = run_setup(debian_tree, verify=True, ca_file=ca, dry_run=True)
    assert "+smtp_tls_security_level = secure" in result.diff.splitlines()
    assert f"+smtp_tls_CAfile = {ca}" in result.diff.splitlines()


def test_rhel_layout_uses_its_ca_bundle(rhel_tree, tmp_path):
    with pytest.raises(setup.SetupError, match="/etc/pki/tls/certs/ca-bundle.crt"):
        run_setup(rhel_tree, dry_run=True, layout=RHEL)
    bundle = tmp_path / "ca-bundle.crt"
    bundle.write_text("")
    layout = dataclasses.replace(RHEL, ca_bundle=bundle)
    result = run_setup(rhel_tree, dry_run=True, layout=layout)
    assert f"+smtp_tls_CAfile = {bundle}" in result.diff.splitlines()
    # RHEL's own settings stay as they are.
    assert "daemon_directory" not in result.diff


class LmdbOnly(Postfix):
    """A Postfix built without Berkeley DB (as newer Fedora ships it)."""

    def map_types(self):
        return super().map_types() - {"hash", "btree"} | {"lmdb"}


def test_lmdb_where_hash_is_missing(rhel_tree, tmp_path):
    bundle = tmp_path / "ca-bundle.crt"
    bundle.write_text("")
    layout = dataclasses.replace(RHEL, ca_bundle=bundle)
    result = run_setup(
        rhel_tree, postfix=LmdbOnly(rhel_tree.etc), layout=layout, dry_run=True
    )
    assert (
        f"+transport_maps = lmdb:{rhel_tree.etc}/transport" in result.diff.splitlines()
    )


def test_layout_detection(tmp_path):
    cases = {
        'ID=debian\nVERSION_ID="12"\n': DEBIAN,
        "ID=ubuntu\nID_LIKE=debian\n": DEBIAN,
        'ID="centos"\nID_LIKE="rhel fedora"\n': RHEL,
        'ID="rocky"\nID_LIKE="rhel centos fedora"\n': RHEL,
    }
    for text, layout in cases.items():
        (tmp_path / "os-release").write_text(text)
        assert detect_layout(tmp_path / "os-release") == layout


def test_setup_and_check_commands(debian_tree, capsys):
    base = ["client", "setup", "--postfix-dir", str(debian_tree.etc), "--location"]
    argv = [*base, "LON", "--domain", "example.com", "--no-reload", "--os", "debian"]
    assert main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "+relayhost = [lon-tls.relay.example]:587" in out and "dry run" in out
    assert "relayhost" not in Postfix(debian_tree.etc).explicit()

    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "backup: " in out and "postmap hash:" in out

    check_argv = ["client", "check", "--postfix-dir", str(debian_tree.etc)]
    assert main([*check_argv, "--location", "LON", "--offline"]) == 0
    assert "all right" in capsys.readouterr().out
    assert main([*check_argv, "--location", "LAX", "--offline", "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert not document["ok"]
    assert {f["code"] for f in document["findings"]} >= {"other-location"}


def test_setup_without_main_cf_is_refused(tmp_path, capsys):
    argv = ["client", "setup", "--postfix-dir", str(tmp_path), "--location", "LON"]
    assert main(argv) == 1
    assert "main.cf does not exist" in capsys.readouterr().err
