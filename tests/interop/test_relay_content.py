"""Messages cross the relay unchanged but for one `Received:` line.

Method. Postfix rewrites what `sendmail` hands it (it adds Received,
Message-ID, Date, From), so the file we submit is not what the relay sees.
Instead each message is submitted once, to two recipients in different
domains: content<i>@direct.example goes from the customer Postfix straight to
smtp-sink over a second smtp transport, content<i>@dest.example goes through the
relay (relayhost, TLS) which routes it to the same smtp-sink. Both copies
come from the same Postfix queue file in the same way, so the direct copy
is exactly what the customer Postfix sent. The relayed copy must equal it
byte for byte after removing its first header, which must be the relay's
own `Received:` line.

smtp-sink stores lines with LF ends and drops bare CRs; both copies go
through it alike, so that does not hide a difference made by the relay
except in CRs, which Postfix never sends bare anyway.

Inputs: every Lib/test/test_email/data/msg_*.txt of the running CPython
(required: the test fails if the stdlib test package is missing) and a
message with a 10 MB attachment (about 13.7 MB base64-encoded).
"""

from __future__ import annotations

import random
import re
from email.message import EmailMessage
from pathlib import Path

import pytest

from support import postfix

pytestmark = pytest.mark.interop

CUSTOMER_IP = "127.0.0.2"
RELAY_TRACE = re.compile(rb"\AReceived: [^\n]*\n(?:[ \t][^\n]*\n)*")


def email_test_messages() -> list[Path]:
    try:
        import test.test_email as email_tests
    except ImportError:
        pytest.fail("CPython's test.test_email package is not installed")
    files = sorted(Path(email_tests.__file__).parent.glob("data/msg_*.txt"))
    assert len(files) > 40, f"expected CPython's msg_*.txt, found {len(files)}"
    return files


def big_attachment_message() -> bytes:
    msg = EmailMessage()
    msg["Subject"] = "10 MB attachment"
    msg["From"] = "alice@customer.test"
    msg["To"] = "bob@dest.example"
    msg.set_content("The attachment is 10 MB of random octets.\n")
    blob = random.Random(2).randbytes(10 * 1024 * 1024)
    msg.add_attachment(blob, maintype="application", subtype="octet-stream")
    return msg.as_bytes()


def test_messages_arrive_as_sent_plus_one_received(tmp_path, shared_sink, shared_relay):
    sink, relay = shared_sink, shared_relay
    inputs = [p.read_bytes() for p in email_test_messages()]
    inputs.append(big_attachment_message())
    direct = "direct unix - - n - - smtp\n  -o smtp_tls_security_level=none\n"
    hop = f"[{sink.host}]:{sink.port}"
    mta = postfix.customer(
        tmp_path / "customer",
        relay.port,
        relay.ca_file,
        CUSTOMER_IP,
        params={"transport_maps": f"inline:{{direct.example=direct:{hop}}}"},
        extra_master=direct,
    )
    with mta:
        for i, data in enumerate(inputs):
            mta.sendmail(
                f"alice@{mta.domain}",
                [f"content{i}@dest.example", f"content{i}@direct.example"],
                data,
            )
        where = postfix.to_prefix("content")
        got = sink.wait_for(2 * len(inputs), timeout_s=120, where=where)

    by_rcpt = {m.recipients[0]: m for m in got}
    for i in range(len(inputs)):
        sent = by_rcpt[f"content{i}@direct.example"].content
        relayed = by_rcpt[f"content{i}@dest.example"].content
        trace = RELAY_TRACE.match(relayed)
        assert trace and b"(tlsrelay)" in trace.group(), f"message {i}: no trace"
        assert relayed[trace.end() :] == sent, f"message {i} changed by the relay"
        # The relay's line comes on top of the customer Postfix's own.
        assert sent.startswith(b"Received: ") and b"(tlsrelay)" not in sent
    assert len(by_rcpt[f"content{len(inputs) - 1}@dest.example"].content) > 13_000_000
