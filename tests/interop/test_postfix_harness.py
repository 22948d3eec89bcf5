"""The private-Postfix harness itself, without tlsrelay: Postfix -> smtp-sink.

Checks that an instance starts and stops cleanly, that `sendmail` mail
reaches an smtp-sink as sent, and that a bounce to the instance's own
sender lands in its mailbox file, which the relay tests depend on.
"""

from __future__ import annotations

import pytest

from support import postfix
from support.postfix import (
    PostfixInstance,
    SmtpSink,
    children_of,
    pid_alive,
    wait_until,
)

pytestmark = pytest.mark.interop


def relaying_to(tmp_path, sink: SmtpSink) -> PostfixInstance:
    return PostfixInstance(
        tmp_path / "customer",
        "customer",
        {
            "relayhost": f"[{sink.host}]:{sink.port}",
            "smtp_bind_address": "127.0.0.2",
        },
    )


def test_sendmail_reaches_sink_and_stop_leaves_nothing(tmp_path):
    with SmtpSink(tmp_path / "sink") as sink:
        mta = relaying_to(tmp_path, sink).start()
        try:
            daemons = wait_until(
                lambda: children_of(mta.master_pid), 10, "qmgr and pickup to start"
            )
            mta.sendmail(
                "alice@customer.test",
                ["bob@dest.example", "carol@dest.example"],
                b"Subject: harness\n\n.leading dot\nbody\n",
            )
            [got] = sink.wait_for(1)
        finally:
            mta.stop()
        assert not any(pid_alive(p) for p in [mta.master_pid, *daemons])

    assert got.client_addr == "127.0.0.2"
    assert got.sender == "alice@customer.test"
    assert got.recipients == ["bob@dest.example", "carol@dest.example"]
    msg = got.message()
    assert msg["Subject"] == "harness"
    assert msg["Message-ID"]  # added by Postfix's cleanup
    assert got.content.endswith(b"\n\n.leading dot\nbody\n")
    assert "status=sent" in mta.maillog()


def test_bounce_to_local_sender_lands_in_mailbox(tmp_path):
    with SmtpSink(tmp_path / "sink", extra=["-f", "RCPT"]) as sink:
        with relaying_to(tmp_path, sink) as mta:
            mta.sendmail(
                f"alice@{mta.domain}", ["bob@dest.example"], b"Subject: x\n\nhi\n"
            )
            mta.wait_for_log(r"status=bounced")
            [bounce] = mta.wait_for_mailbox(1)
    assert b"Undelivered Mail Returned to Sender" in bounce
    assert b"bob@dest.example" in bounce


def test_destination_instance_stores_mail_in_its_mailbox(tmp_path):
    dest = postfix.destination(tmp_path / "dest", ["dest.example"])
    with dest:
        sender = PostfixInstance(
            tmp_path / "sender",
            "sender",
            {"relayhost": f"[127.0.0.1]:{dest.port}", "smtp_bind_address": "127.0.0.2"},
        )
        with sender:
            sender.sendmail(
                "alice@sender.test", ["bob@dest.example"], b"Subject: to dest\n\nhi\n"
            )
            [got] = dest.wait_for_mailbox(1)
    assert b"Subject: to dest" in got
    assert b"Delivered-To: bob@dest.example" in got
    assert f"relay=127.0.0.1[127.0.0.1]:{dest.port}" in sender.maillog()
