"""Property tests: no server input makes the client core raise or write
anything unsafe."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tlsrelay.smtp import client as c

REPLY_LINES = st.sampled_from(
    [
        b"220 mx ESMTP\r\n",
        b"220-mx\r\n",
        b"250 ok\r\n",
        b"250-mx\r\n",
        b"250-PIPELINING\r\n",
        b"250-STARTTLS\r\n",
        b"250-8BITMIME\r\n",
        b"250-SIZE 10\r\n",
        b"250-SIZE \xc2\xb2\r\n",
        b"250 DSN\r\n",
        b"354 go\r\n",
        b"421 bye\r\n",
        b"450 later\r\n",
        b"550 no\r\n",
        b"221 bye\r\n",
        b"\r\n",
        b"2",
    ]
)
CHUNKS = st.lists(st.one_of(REPLY_LINES, st.binary(max_size=40)), max_size=30)
MESSAGE = c.OutboundMessage(
    "a@example.com",
    (c.OutboundRecipient("b@x", notify="FAILURE"), c.OutboundRecipient("c@x")),
    b"Subject: x\r\n\r\n.\r\n..\r\nbody\r\n",
)


def safe(out: bytes) -> bool:
    return out.count(b"\n") == out.count(b"\r\n") == out.count(b"\r")


@settings(max_examples=300, deadline=None)
@given(CHUNKS, st.booleans())
def test_any_server_bytes_never_raise_and_output_stays_crlf(chunks, send_early):
    conn = c.ClientConnection(c.ClientConfig("relay.example"))
    written = b""
    done: list[c.TransactionDone] = []
    sent_message = False

    def drain() -> None:
        while (event := conn.next_event()) not in (c.NEED_DATA, c.CLOSED):
            if isinstance(event, c.StartTLS):
                conn.tls_started()
            elif isinstance(event, c.TransactionDone):
                done.append(event)

    for chunk in chunks:
        conn.receive_data(chunk)
        drain()
        if conn.state is c.State.READY and not sent_message and send_early:
            conn.send_message(MESSAGE)
            sent_message = True
            drain()
        written += conn.data_to_send()
    conn.receive_data(b"")
    drain()
    written += conn.data_to_send()
    assert safe(written)
    assert conn.state is c.State.CLOSED
    # A transaction that started always ends with a result per recipient.
    assert len(done) == int(sent_message)
    for event in done:
        assert len(event.results) == len(MESSAGE.recipients)


@given(st.binary(max_size=300))
def test_dot_stuffed_payload_has_one_terminator(content):
    content = content.replace(b"\r", b"").replace(b"\n", b"\r\n")
    wire = c.dot_stuff(content)
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    assert (b"\r\n" + wire).count(b"\r\n.\r\n") == 1
