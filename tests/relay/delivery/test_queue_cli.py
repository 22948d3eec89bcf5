"""`tlsrelay queue ...` against a real spool, and what delivery does next."""

from __future__ import annotations

import json
import socket

import pytest

from tlsrelay.cli.main import main
from tlsrelay.relay import spool as spool_mod


@pytest.fixture
def cli(world, capsys):
    """Run `tlsrelay -c CONFIG queue ARGS`; return (status, stdout, stderr)."""
    cfg = world.tmp / "tlsrelay.toml"
    cfg.write_text(
        '[node]\nhostname = "relay.example.net"\n'
        f'[delivery]\ndns = "{world.dns.nameserver}"\n'
    )

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        status = main(["-c", str(cfg), "queue", *args])
        out, err = capsys.readouterr()
        return status, out, err

    return run


@pytest.fixture
def notified(world):
    """Datagrams sent to the spool's notify socket (as delivery would get)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(world.spool.notify_path))
    sock.setblocking(False)

    def received() -> list[str]:
        found = []
        while True:
            try:
                found.append(sock.recv(256).decode())
            except BlockingIOError:
                return found

    yield received
    sock.close()


def test_list_json_shape(world, cli):
    qid = world.queue("b@example.org", "c@example.org")
    status, out, _ = cli("list", "--json")
    assert status == 0
    [item] = json.loads(out)
    assert item == {
        "id": qid,
        "sender": "a@example.com",
        "recipients": [
            {"address": "b@example.org", "status": "pending", "last_error": ""},
            {"address": "c@example.org", "status": "pending", "last_error": ""},
        ],
        "size": world.entries()[0].size,
        "arrived": world.clock.now,
        "attempts": 0,
        "next_attempt": None,
        "last_error": "",
        "queue": "active",
    }


def test_list_text_and_show(world, cli):
    qid = world.queue("b@example.org")
    status, out, _ = cli("list")
    assert status == 0 and qid in out and "<b@example.org> pending" in out
    status, out, _ = cli("show", qid, "--json")
    document = json.loads(out)
    assert document["envelope"]["sender"] == "a@example.com"
    assert document["state"]["attempts"] == 0
    assert document["headers"].startswith("From: a@example.com\r\n")
    assert "Hello" not in document["headers"]


@pytest.mark.parametrize(
    "args", [("show", "NOSUCHID"), ("hold", "NOSUCHID"), ("delete", "../x")]
)
def test_unknown_id_is_an_error(world, cli, args):
    status, out, err = cli(*args)
    assert status == 1 and "no message" in err and out == ""


def test_hold_release_retry_delete(world, cli, notified):
    world.dns.servfail("example.org")
    qid = world.queue("b@example.org")
    world.rounds()  # DNS fails: deferred for a while
    entry = world.entries()[0]
    assert entry.state.next_attempt > world.clock.now

    assert cli("hold", qid)[0] == 0
    assert world.entries()[0].queue_name == "hold"
    world.clock.now = entry.state.next_attempt + 1
    world.rounds()
    assert world.entries()[0].state.attempts == 1  # held: not tried

    assert cli("release", qid)[0] == 0
    state = world.entries()[0].state
    assert not state.held and state.next_attempt == 0

    world.rounds()
    assert world.entries()[0].state.attempts == 2
    assert cli("retry", "--all")[0] == 0
    assert world.entries()[0].state.next_attempt == 0
    assert cli("retry", qid)[0] == 0

    assert cli("delete", qid)[0] == 0
    assert world.entries() == []
    # hold, release, retry --all, retry, delete: delivery re-reads each id.
    assert notified() == [qid] * 5


def test_bounce_fails_open_recipients_and_delivery_sends_the_dsn(world, cli):
    qid = world.queue("b@example.org")
    assert cli("bounce", qid)[0] == 0
    state = world.entries()[0].state
    assert state.recipients[0].status == spool_mod.FAILED
    world.rounds()
    [(entry, dsn)] = world.dsns()
    assert entry.envelope.recipients[0].address == "a@example.com"
    assert qid not in world.spool.ids()
    assert "5.0.0" in dsn.as_string()
