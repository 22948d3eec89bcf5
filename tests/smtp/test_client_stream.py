"""Streamed content: chunked dot-stuffing and content checks equal the
whole-buffer results, and the core's SendContent dialogue."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tlsrelay.smtp import client as c

# Octets that matter to stuffing and the checks, plus anything else.
PIECES = st.lists(
    st.one_of(
        st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"\r\n.", b"\r\n\r\n", b"\xc3"]),
        st.binary(max_size=6),
    ),
    max_size=40,
)


def split(content: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(content)) for cut in cuts})
    bounds = [0, *points, len(content)]
    return [content[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def stuffed_in_chunks(chunks: list[bytes]) -> bytes:
    stuffer = c.DotStuffer()
    return b"".join(stuffer.feed(chunk) for chunk in chunks) + stuffer.finish()


@settings(max_examples=500, deadline=None)
@given(PIECES, st.lists(st.integers(min_value=0, max_value=200), max_size=12))
def test_chunked_stuffing_equals_whole_buffer(pieces, cuts):
    content = b"".join(pieces)
    one_octet = [content[i : i + 1] for i in range(len(content))]
    assert stuffed_in_chunks(split(content, cuts)) == c.dot_stuff(content)
    assert stuffed_in_chunks(one_octet) == c.dot_stuff(content)


def test_dot_line_straddling_a_chunk_boundary_is_stuffed():
    for chunks in (
        [b"a\r", b"\n.b\r\n"],
        [b"a\r\n", b".b\r\n"],
        [b"a\r\n", b"", b".", b"b\r\n"],
        [b".", b"a\r\n"],
    ):
        assert stuffed_in_chunks(chunks) == c.dot_stuff(b"".join(chunks))
    assert stuffed_in_chunks([b"a\r", b"\n.b\r\n"]) == b"a\r\n..b\r\n.\r\n"


@settings(max_examples=500, deadline=None)
@given(PIECES, st.lists(st.integers(min_value=0, max_value=200), max_size=12))
def test_chunked_scan_equals_whole_buffer_checks(pieces, cuts):
    content = b"".join(pieces)
    header = c.header_block(content)
    one_octet = [content[i : i + 1] for i in range(len(content))]
    for chunks in (split(content, cuts), one_octet):
        scanner = c.ContentScanner()
        for chunk in chunks:
            scanner.feed(chunk)
        assert scanner.facts() == whole_buffer_facts(content, header)


def whole_buffer_facts(content: bytes, header: bytes) -> c.ContentFacts:
    return c.ContentFacts(
        size=len(content),
        eight_bit=c.is_8bit(content),
        bare_line_ending=c.has_bare_line_ending(content),
        header_size=len(header),
        header_8bit=not header.isascii(),
        ends_with_crlf=content.endswith(b"\r\n"),
    )


# -- the dialogue -------------------------------------------------------------

CONTENT = b"Subject: t\r\n\r\n.dot\r\nline\r\n"


def ready_pipelining() -> c.ClientConnection:
    conn = c.ClientConnection(c.ClientConfig("relay.example", c.TlsLevel.NONE))
    conn.receive_data(b"220 mx\r\n")
    conn.data_to_send()
    conn.receive_data(b"250-mx\r\n250-PIPELINING\r\n250 SIZE 1000\r\n")
    assert isinstance(conn.next_event(), c.Ready)
    return conn


def streamed(content: bytes = CONTENT) -> c.OutboundMessage:
    recipient = c.OutboundRecipient("b@example.org")
    return c.OutboundMessage("a@example.com", (recipient,), c.ContentFacts.of(content))


def at_354(conn: c.ClientConnection, message: c.OutboundMessage) -> None:
    conn.send_message(message)
    assert b"SIZE=%d" % message.facts.size in conn.data_to_send()
    conn.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert conn.next_event() == c.SendContent()
    assert conn.state is c.State.CONTENT


def test_streamed_content_goes_out_stuffed_chunk_by_chunk():
    conn = ready_pipelining()
    at_354(conn, streamed())
    wire = b""
    for chunk in (CONTENT[:15], CONTENT[15:16], CONTENT[16:]):
        conn.send_content(chunk)
        wire += conn.data_to_send()
    conn.end_content()
    wire += conn.data_to_send()
    assert wire == c.dot_stuff(CONTENT)
    conn.receive_data(b"250 2.0.0 queued\r\n")
    [done] = [e for e in iter(conn.next_event, c.NEED_DATA)]
    assert isinstance(done, c.TransactionDone)
    assert str(done.results[0].reply) == "250 2.0.0 queued"
    assert conn.state is c.State.READY


def test_content_that_changed_is_never_ended():
    conn = ready_pipelining()
    at_354(conn, streamed())
    conn.send_content(CONTENT.replace(b"line", b"li\ne"))
    conn.end_content()
    assert not conn.data_to_send().endswith(b".\r\n")
    done, failed = conn.next_event(), conn.next_event()
    assert done.results[0].reply == c.CONTENT_CHANGED
    assert failed == c.SessionFailed(c.CONTENT_CHANGED, False)
    assert conn.state is c.State.CLOSED


def test_abort_content_sends_nothing_more():
    conn = ready_pipelining()
    at_354(conn, streamed())
    conn.send_content(CONTENT[:5])
    reply = c.local_reply(451, "4.3.0 cannot read")
    conn.abort_content(reply)
    assert conn.data_to_send() == b""
    assert conn.next_event().results[0].reply == reply


def test_streamed_facts_drive_checks_before_mail():
    conn = ready_pipelining()
    conn.send_message(streamed(b"Subject: x\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n"))
    assert conn.data_to_send() == b""  # no 8BITMIME offered: nothing sent
    [result] = conn.next_event().results
    assert result.reply == c.NEEDS_8BITMIME and not result.remote


def test_send_content_outside_streaming_is_a_bug():
    conn = ready_pipelining()
    with pytest.raises(RuntimeError):
        conn.send_content(b"x")
