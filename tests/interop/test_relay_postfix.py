"""A real Postfix as the customer's MTA, relaying through a tlsrelay node.

The customer Postfix sends from its own loopback address (127.0.0.2) with
relayhost=[127.0.0.1]:PORT and smtp_tls_security_level=encrypt; the node
routes dest.example to Postfix's smtp-sink. Issue 2, "Interop with a real
Postfix": listed customers get their mail through over TLS; unlisted ones
see `554 5.7.1` and Postfix bounces the mail to its sender.
"""

from __future__ import annotations

import re

import pytest

from support import postfix

pytestmark = pytest.mark.interop

CUSTOMER_IP = "127.0.0.2"  # on the shared node's list
UNLISTED_IP = "127.0.0.5"


def test_sendmail_reaches_destination_through_relay(
    tmp_path, shared_sink, shared_relay
):
    sink, relay = shared_sink, shared_relay
    mta = postfix.customer(
        tmp_path / "customer", relay.port, relay.ca_file, CUSTOMER_IP
    )
    with mta:
        mta.sendmail(
            f"alice@{mta.domain}",
            ["through-bob@dest.example"],
            b"Subject: through the relay\n\nHello over TLS.\n",
        )
        sent = mta.wait_for_log(
            r"status=sent \(250 2\.0\.0 (?P<reply>.*)\)", timeout_s=30
        )
        [got] = sink.wait_for(1, where=postfix.to_prefix("through-"))

    log = mta.maillog()
    # Postfix logs the TLS it used with the relay host.
    assert re.search(
        rf"TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:{relay.port}: "
        r"TLSv1\.[23]",
        log,
    ), log
    assert f"relay=127.0.0.1[127.0.0.1]:{relay.port}" in log

    assert got.sender == f"alice@{mta.domain}"
    assert got.recipients == ["through-bob@dest.example"]
    msg = got.message()
    assert msg["Subject"] == "through the relay"
    assert msg.get_payload() == "Hello over TLS.\n"
    top = msg.get_all("Received")[0]
    assert "(tlsrelay)" in top and f"[{CUSTOMER_IP}]" in top
    # The queue id in the 250 reply is the one in the relay's trace header.
    queue_id = re.search(r" id (\S+?);?\s", top).group(1)
    assert queue_id in sent.group("reply")


def test_unlisted_customer_gets_554_and_a_bounce(tmp_path, shared_relay):
    relay = shared_relay  # its list has other addresses, so it has a snapshot
    mta = postfix.customer(
        tmp_path / "customer", relay.port, relay.ca_file, UNLISTED_IP
    )
    with mta:
        mta.sendmail(
            f"alice@{mta.domain}",
            ["refused-bob@dest.example"],
            b"Subject: refused\n\nNo.\n",
        )
        bounced = mta.wait_for_log(
            r"to=<refused-bob@dest\.example>.*dsn=5\.7\.1, status=bounced "
            r"\(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 554 5\.7\.1 (?P<text>[^)]*)",
            timeout_s=30,
        )
        [bounce] = mta.wait_for_mailbox(1)

    assert bounced.group("text").strip(), "554 without a text on how to get enabled"
    assert b"Undelivered Mail Returned to Sender" in bounce
    assert f"To: alice@{mta.domain}".encode() in bounce
    assert b"554 5.7.1" in bounce
    assert b"Subject: refused" in bounce
