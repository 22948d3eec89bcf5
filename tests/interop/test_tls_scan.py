"""testssl.sh from Debian scans a running node's submission and smtps ports.

Issue 2 promises TLS 1.2 or newer with modern ciphers on every listener.
This test asks an outside scanner rather than our own code: testssl.sh
(`testssl`) checks the protocols (`-p`), the cipher categories (`-s`) and
forward secrecy (`-f`) through STARTTLS on the submission port and directly
on the smtps port, and writes its findings as flat JSON. The test fails on
any protocol below TLS 1.2 that is offered, on any weak cipher category
that is offered, and on any finding testssl itself rates MEDIUM or worse.

Both scans run at once against one node (about 20 s on two cores), each
bounded by a timeout. The node and the scanners are stopped by pid.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.node import Node
from support.tools import need

pytestmark = pytest.mark.interop

SCAN_TIMEOUT_S = 180

# testssl's JSON ids of what must never be offered.
OLD_PROTOCOLS = ("SSLv2", "SSLv3", "TLS1", "TLS1_1")
WEAK_CIPHERS = (
    "cipherlist_NULL",
    "cipherlist_aNULL",
    "cipherlist_EXPORT",
    "cipherlist_LOW",
    "cipherlist_3DES_IDEA",
    "cipherlist_AVERAGE",  # "Obsolete CBC ciphers"
)
BAD_SEVERITIES = {"MEDIUM", "HIGH", "CRITICAL"}


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Iterator[dict[str, list[dict]]]:
    """Findings of one testssl run per port: {"submission": [...], ...}."""
    testssl = need("testssl")
    base = tmp_path_factory.mktemp("tls-scan")
    with Node.create(base) as node:
        node.start()
        targets = {
            "submission": ["--starttls", "smtp", f"127.0.0.1:{node.submission_port}"],
            "smtps": [f"127.0.0.1:{node.smtps_port}"],
        }
        runs = {
            name: _start_scan(testssl, base, name, t) for name, t in targets.items()
        }
        results = {name: _finish_scan(base, name, run) for name, run in runs.items()}
    yield results


def _start_scan(testssl: str, base: Path, name: str, target: list[str]):
    argv = [
        testssl, "--quiet", "--warnings", "off", "--fast", "--color", "0",
        "--connect-timeout", "10", "--openssl-timeout", "10",
        "-p", "-s", "-f", "--jsonfile", str(base / f"{name}.json"), *target,
    ]  # fmt: skip
    out = open(base / f"{name}.txt", "wb")
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)


def _finish_scan(base: Path, name: str, run: subprocess.Popen) -> list[dict]:
    try:
        run.wait(SCAN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        run.kill()
        run.wait()
        pytest.fail(f"testssl on {name} took over {SCAN_TIMEOUT_S} s")
    text = (base / f"{name}.txt").read_text(errors="replace")
    report = base / f"{name}.json"
    assert report.exists(), f"testssl wrote no JSON for {name}:\n{text[-3000:]}"
    return json.loads(report.read_text())


def by_id(findings: list[dict]) -> dict[str, dict]:
    return {f["id"]: f for f in findings}


@pytest.mark.parametrize("port", ["submission", "smtps"])
def test_only_tls12_and_tls13_offered(scans, port):
    found = by_id(scans[port])
    for protocol in OLD_PROTOCOLS:
        assert found[protocol]["finding"].startswith("not offered"), found[protocol]
    assert found["TLS1_2"]["finding"].startswith("offered"), found["TLS1_2"]
    assert found["TLS1_3"]["finding"].startswith("offered"), found["TLS1_3"]


@pytest.mark.parametrize("port", ["submission", "smtps"])
def test_no_weak_cipher_offered(scans, port):
    found = by_id(scans[port])
    for category in WEAK_CIPHERS:
        assert found[category]["finding"] == "not offered", found[category]
    assert found["cipherlist_STRONG"]["finding"].startswith("offered")
    assert found["PFS"]["finding"].startswith("offered"), found["PFS"]


@pytest.mark.parametrize("port", ["submission", "smtps"])
def test_nothing_rated_medium_or_worse(scans, port):
    bad = [f for f in scans[port] if f.get("severity") in BAD_SEVERITIES]
    assert not bad, json.dumps(bad, indent=1)
    # The scan really ran: testssl reported on the protocols it tried.
    assert {"TLS1_2", "TLS1_3", "cipherlist_NULL"} <= set(by_id(scans[port]))
