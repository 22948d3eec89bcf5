"""swaks from Debian as a second real client of the relay.

Issue 2: submission ports require STARTTLS before MAIL (`530 5.7.0`), smtps
ports speak TLS at once, and an accepted message gets `250 2.0.0` with its
queue id, the same id the relay writes in its `Received:` line.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from support.postfix import to_prefix
from support.tools import need

pytestmark = pytest.mark.interop

CLIENT_IP = "127.0.0.3"  # on the shared node's list


def swaks(*args: str) -> subprocess.CompletedProcess:
    argv = [need("swaks"), "--local-interface", CLIENT_IP, "--from", "alice@c.test"]
    argv += ["--h-Subject", "swaks test", "--body", "Sent by swaks.", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def tls_args(relay) -> list[str]:
    return ["--tls-verify", "--tls-ca-path", str(relay.ca_file)]


def test_mail_without_starttls_gets_530(shared_relay, shared_sink):
    relay = shared_relay
    run = swaks("--server", f"127.0.0.1:{relay.port}", "--to", "plain@dest.example")
    assert run.returncode != 0
    assert re.search(r"^<\*\* +530 5\.7\.0 ", run.stdout, re.M), run.stdout
    assert "STARTTLS" in run.stdout  # offered in the EHLO reply
    assert not shared_sink.messages(to_prefix("plain@"))


def test_starttls_message_accepted_with_queue_id(shared_relay, shared_sink):
    relay = shared_relay
    run = swaks(
        "--server", f"127.0.0.1:{relay.port}", "--to", "starttls@dest.example", "-tls",
        *tls_args(relay),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"^<- +220 2\.0\.0", run.stdout, re.M), run.stdout
    assert re.search(r"=== TLS started with cipher TLSv1\.[23]", run.stdout)
    accepted = re.search(r"^<~ +250 2\.0\.0 (.*)$", run.stdout.split("DATA")[-1], re.M)
    assert accepted, run.stdout

    [got] = shared_sink.wait_for(1, where=to_prefix("starttls@"))
    trace = got.message().get_all("Received")[0]
    queue_id = re.search(r" id (\S+?);?\s", trace).group(1)
    assert queue_id in accepted.group(1)
    assert "ESMTPS" in trace and f"[{CLIENT_IP}]" in trace
    assert got.message()["Subject"] == "swaks test"


def test_smtps_port_speaks_tls_at_once(shared_relay, shared_sink):
    relay = shared_relay
    run = swaks(
        "--server", f"127.0.0.1:{relay.smtps_port}", "--to", "smtps@dest.example",
        "--tls-on-connect", *tls_args(relay),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"^<~ +250 2\.0\.0 ", run.stdout, re.M), run.stdout
    shared_sink.wait_for(1, where=to_prefix("smtps@"))
