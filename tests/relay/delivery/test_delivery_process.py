"""The delivery process as the supervisor starts it: `-m tlsrelay.relay.delivery`."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from delivery_helpers import CONTENT

from tlsrelay.relay import spool as spool_mod


def wait_for(predicate, timeout_s=15.0, what="condition"):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_process_wakes_on_notify_delivers_and_stops_on_sigterm(tmp_path, make_mx):
    mx = make_mx()
    cfg = tmp_path / "tlsrelay.toml"
    cfg.write_text(
        '[node]\nhostname = "relay.example.net"\n'
        f'[delivery]\nroutes = {{ "example.org" = "{mx.address}" }}\n'
    )
    spool = spool_mod.Spool(tmp_path / "spool")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tlsrelay.relay.delivery", "-c", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(spool.notify_path.exists, what="notify.sock")
        # The first scan has happened; only the datagram can bring this one
        # in before the 30 s rescan.
        envelope = spool_mod.Envelope(
            "a@example.com", [spool_mod.Recipient("b@example.org")]
        )
        qid = spool.enqueue(envelope, CONTENT)
        mx.wait_for_messages(1)
        wait_for(lambda: qid not in spool.ids(), what="removal")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = proc.stdout.read().decode()
    assert f"{qid}: to=<b@example.org>" in log and "status=sent" in log
    assert not spool.notify_path.exists()
