"""End to end: `client setup` configures a real private Postfix, `client
check` talks to a running tlsrelay node, `client test` relays through it.

One node for the module (tests/support/node.py), routing dest.example to
Postfix's smtp-sink; its filtering list is published directly, so each test
sets the access answer it needs. The customer Postfix sends from 127.0.0.4
(smtp_bind_address), and check's access probe leaves from the same address.
"""

from __future__ import annotations

import json

import pytest

from support import postfix
from support.dns import DnsServer
from support.node import Node
from tlsrelay.cli.main import main

pytestmark = pytest.mark.interop

CUSTOMER_IP = "127.0.0.4"


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    with postfix.SmtpSink(tmp_path_factory.mktemp("client-sink") / "sink") as s:
        yield s


@pytest.fixture(scope="module")
def node(tmp_path_factory, sink):
    relay = Node.create(
        tmp_path_factory.mktemp("client-node"),
        routes={"dest.example": sink.address},
    )
    relay.ca.cert_pem.write_to_path(relay.dir / "ca.pem")
    relay.start()
    yield relay
    relay.stop()


def fresh_customer(tmp_path, node):
    """A customer Postfix before setup: no relayhost, opportunistic TLS."""
    return postfix.customer(
        tmp_path / "customer",
        node.submission_port,
        node.dir / "ca.pem",
        CUSTOMER_IP,
        params={"relayhost": "", "smtp_tls_security_level": "may"},
    )


def run_json(capsys, argv) -> tuple[int, dict]:
    status = main([*argv, "--json"])
    return status, json.loads(capsys.readouterr().out)


def test_setup_check_and_test_through_a_running_relay(tmp_path, node, sink, capsys):
    node.publish(allowed=[f"{CUSTOMER_IP}/32"])
    relay = f"127.0.0.1:{node.submission_port}"
    with fresh_customer(tmp_path, node) as mta:
        etc = str(mta.etc)
        check = ["client", "check", "--postfix-dir", etc, "--relay-host", relay]
        status, before = run_json(capsys, [*check, "--offline"])
        assert status == 1
        assert {f["code"] for f in before["findings"]} >= {
            "relayhost-missing",
            "tls-level-low",
        }

        setup = ["client", "setup", "--postfix-dir", etc, "--relay-host", relay]
        ca = ["--ca-file", str(node.dir / "ca.pem")]
        status, done = run_json(capsys, [*setup, *ca, "--domain", "dest.example"])
        assert status == 0 and done["changed"]
        assert done["steps"][-1].startswith("reloaded: ")
        assert done["steps"][-1].endswith(f" -c {etc} reload")

        status, report = run_json(capsys, [*check, "--timeout", "10"])
        faults = [f for f in report["findings"] if f["severity"] != "ok"]
        assert status == 0, faults
        assert report["probe"]["access"] == "listed"
        assert report["probe"]["tls"]["trusted"] is True
        assert report["probe"]["tls"]["version"] in ("TLSv1.2", "TLSv1.3")

        test = ["client", "test", "--postfix-dir", etc, "--timeout", "30"]
        argv = [*test, "--to", "e2e-bob@dest.example", "--from", "alice@x.test"]
        status, sent = run_json(capsys, argv)
        assert status == 0, sent
        steps = [hop["step"] for hop in sent["hops"]]
        assert steps == ["submitted", "queued", "connected", "tls", "accepted"]
        assert (
            f"relay=127.0.0.1[127.0.0.1]:{node.submission_port}"
            in (sent["hops"][2]["detail"])
        )
        [got] = sink.wait_for(1, where=postfix.to_prefix("e2e-"))
        assert got.recipients == ["e2e-bob@dest.example"]
        assert got.message()["Message-ID"] == sent["message_id"]
        # The queue id the relay answered is the one in its trace header.
        top = got.message().get_all("Received")[0]
        assert f" id {sent['relay_queue_id']}" in top


@pytest.mark.parametrize(
    "allowed, pending, access, code",
    [
        ([], [f"{CUSTOMER_IP}/32"], "pending", "access-pending"),
        (["127.0.0.9/32"], [], "unknown", "access-unknown"),
    ],
)
def test_check_reports_access_of_this_server(
    tmp_path, node, capsys, allowed, pending, access, code
):
    node.publish(allowed=allowed, pending=pending)
    mta = fresh_customer(tmp_path, node)
    mta.write_config()  # a config tree only: Postfix need not run for check
    try:
        relay = f"127.0.0.1:{node.submission_port}"
        argv = ["client", "setup", "--postfix-dir", str(mta.etc), "--relay-host"]
        ca = ["--ca-file", str(node.dir / "ca.pem")]
        assert main([*argv, relay, *ca, "--no-reload"]) == 0
        capsys.readouterr()
        check = ["client", "check", "--postfix-dir", str(mta.etc), "--timeout", "10"]
        status, report = run_json(capsys, check)
    finally:
        postfix.settle(mta.home, mta.root)
    assert status == 1
    assert report["probe"]["access"] == access
    assert [f["code"] for f in report["findings"] if f["severity"] != "ok"] == [code]


def test_check_resolves_the_relay_name_and_verifies_it(tmp_path, node, capsys):
    node.publish(allowed=[f"{CUSTOMER_IP}/32"])
    mta = fresh_customer(tmp_path, node)
    mta.write_config()
    name = f"lon-tls.relay.example:{node.submission_port}"
    try:
        with DnsServer() as dns:
            dns.add("lon-tls.relay.example", "A", "127.0.0.1")
            argv = ["client", "setup", "--postfix-dir", str(mta.etc), "--relay-host"]
            ca = ["--ca-file", str(node.dir / "ca.pem"), "--verify"]
            assert main([*argv, name, *ca, "--no-reload"]) == 0
            capsys.readouterr()
            check = ["client", "check", "--postfix-dir", str(mta.etc)]
            status, report = run_json(capsys, [*check, "--dns", dns.nameserver])
    finally:
        postfix.settle(mta.home, mta.root)
    assert status == 0, report["findings"]
    assert report["addresses"] == ["127.0.0.1"]
    assert report["probe"]["tls"]["name_match"] is True
    codes = [f["code"] for f in report["findings"]]
    assert "cert-trusted" in codes and "access-listed" in codes
