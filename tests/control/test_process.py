"""The control process publishes this node's snapshot and follows the store."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import time

from support.store import write_config
from tlsrelay import config
from tlsrelay.control import db, lists
from tlsrelay.control.process import Publisher
from tlsrelay.relay import access


def wait_for(predicate, timeout_s: float, step_s: float = 0.02):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    return predicate()


def test_process_publishes_and_follows_changes(settings, config_path):
    path = settings.snapshot_path("LON")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tlsrelay.control.process", "-c", str(config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_for(path.exists, 15), "no snapshot within 15 s"
        reader = access.AccessList(path, check_interval_s=0)
        assert reader.decide("8.8.8.8") == access.UNKNOWN

        with db.transaction(settings) as session:
            lists.add(session, "LON", lists.parse_network("8.8.8.8"), "test")
        committed = time.monotonic()
        assert wait_for(lambda: reader.decide("8.8.8.8") == access.LISTED, 1.0)
        assert time.monotonic() - committed < 1.0

        # Another location's change does not touch this node's list.
        with db.transaction(settings) as session:
            lists.add(session, "FRA", lists.parse_network("9.9.9.9"), "test")
        assert wait_for(
            lambda: (
                json.loads(path.read_text())["version"] == db.read_version_of(settings)
            ),
            1.0,
        )
        assert reader.decide("9.9.9.9") == access.UNKNOWN
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=10)[0].decode()
    assert proc.returncode == 0, output


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_outage_keeps_last_snapshot(settings, tmp_path, caplog):
    publisher = Publisher(settings)
    assert publisher.poll_once() is True
    path = settings.snapshot_path("LON")
    before = path.read_bytes()
    assert publisher.poll_once() is False  # nothing changed

    down_dir = tmp_path / "down"
    down_dir.mkdir()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/test"
    down = config.load(
        write_config(down_dir, url, node={"state_dir": str(path.parent)})
    )
    broken = Publisher(down)
    with caplog.at_level(logging.WARNING, logger="tlsrelay.control.process"):
        assert broken.poll_once() is False
        assert broken.poll_once() is False
    warnings = [m.getMessage() for m in caplog.records if m.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "unavailable" in warnings[0] and "keeping the last snapshot" in warnings[0]
    assert path.read_bytes() == before
    db.dispose(url)


def test_polls_read_the_counter_and_rebuild_only_when_it_moves(settings, monkeypatch):
    publisher = Publisher(settings)
    built = []
    real_snapshot = lists.snapshot

    def snapshot(session, location):
        built.append(location)
        return real_snapshot(session, location)

    monkeypatch.setattr(lists, "snapshot", snapshot)
    assert publisher.poll_once() is True
    assert publisher.poll_once() is False
    assert publisher.poll_once() is False
    assert built == ["LON"]

    with db.transaction(settings) as session:
        lists.add(session, "LON", lists.parse_network("8.8.8.8"), "test")
    assert publisher.poll_once() is True
    assert built == ["LON", "LON"]


def test_store_lost_between_polls_keeps_last_snapshot(settings, tmp_path, caplog):
    url = f"postgresql+psycopg://postgres:secret@127.0.0.1:{closed_port()}/test"
    down = config.load(write_config(tmp_path, url))
    publisher = Publisher(down)
    publisher.ready = True  # migrated before; the store went away since
    with caplog.at_level(logging.WARNING, logger="tlsrelay.control.process"):
        assert publisher.poll_once() is False
        assert publisher.poll_once() is False
    warnings = [m.getMessage() for m in caplog.records if m.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "unavailable" in warnings[0], warnings
    assert "secret" not in warnings[0]
    db.dispose(url)
