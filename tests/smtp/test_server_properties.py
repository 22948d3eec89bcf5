"""Property tests (hypothesis) of the SMTP server core.

No input makes the core raise or fall into its internal-error guard; a DATA
body yields exactly one end (MessageEnd or MessageAborted) whatever it holds;
a message with a bare CR or LF is never accepted; and how the input is split
into reads never changes the replies or the events.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_server_driver import Peer

from tlsrelay.smtp import events, replies

SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

COMMAND_LINES = [
    b"EHLO c.example\r\n",
    b"HELO c.example\r\n",
    b"MAIL FROM:<a@example.com>\r\n",
    b"MAIL FROM:<>\r\n",
    b"MAIL FROM:<a@example.com> SIZE=100 BODY=8BITMIME RET=FULL ENVID=x+2B\r\n",
    b"MAIL FROM:<bad address>\r\n",
    b"RCPT TO:<b@example.org>\r\n",
    b"RCPT TO:<x@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@example.org\r\n",
    b"RCPT TO:<@r.example:b@example.org>\r\n",
    b"RCPT TO:<unqualified>\r\n",
    b"DATA\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY a\r\n",
    b"HELP\r\n",
    b"QUIT\r\n",
    b"BDAT 0 LAST\r\n",
    b"BDAT x\r\n",
]
FRAGMENTS = [
    b".\r\n",
    b"\r\n.\r\n",
    b"\n.\r\n",
    b".\r",
    b"..",
    b"\r",
    b"\n",
    b"\r\n",
    b"text",
    "ü".encode(),
    b"x" * 600,
    b"y" * 1100,
    b"z" * 5000,
]


@st.composite
def bdat(draw) -> bytes:
    chunk = draw(st.binary(max_size=40))
    last = draw(st.booleans())
    return b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if last else b"") + chunk


piece = st.one_of(
    st.sampled_from(COMMAND_LINES),
    st.sampled_from(FRAGMENTS),
    st.binary(max_size=30),
    bdat(),
)
session_input = st.lists(piece, max_size=30).map(b"".join)


def policy(event):
    """Deterministic answers, so a re-run with other splits answers alike."""
    if isinstance(event, events.RcptTo) and event.address.startswith("x"):
        return replies.Reply(550, "5.1.1", "No such user")
    if isinstance(event, events.MailFrom) and event.params.ret == "FULL":
        return replies.ACCESS_PENDING
    return None


def run(chunks: list[bytes], **config) -> Peer:
    peer = Peer(policy=policy, config=config)
    for chunk in chunks:
        peer.send(chunk)
        if peer.closed:
            break
    peer.send(b"")
    return peer


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def merged_events(peer: Peer) -> list:
    """Events with adjacent Body pieces joined (read sizes decide their cut)."""
    out: list = []
    for event in peer.events:
        if isinstance(event, events.Body) and out and isinstance(out[-1], events.Body):
            out[-1] = events.Body(out[-1].data + event.data)
        else:
            out.append(event)
    return out


@SETTINGS
@given(session_input, st.lists(st.integers(min_value=0), max_size=12))
def test_no_input_makes_the_core_raise(data, cuts):
    peer = run(splits(data, cuts), max_message_size=2000, max_errors=1000)
    assert events.ConnectionClosed("internal-error") not in peer.events
    assert peer.closed


@SETTINGS
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0), max_size=8))
def test_random_bytes_after_ehlo_never_raise(data, cuts):
    peer = run([b"EHLO c.example\r\n"] + splits(data, cuts))
    assert events.ConnectionClosed("internal-error") not in peer.events


@SETTINGS
@given(session_input, st.lists(st.integers(min_value=0), max_size=12))
def test_splitting_the_input_changes_nothing(data, cuts):
    whole = run([data], max_message_size=2000, max_errors=1000)
    split = run(splits(data, cuts), max_message_size=2000, max_errors=1000)
    assert split.output == whole.output
    assert merged_events(split) == merged_events(whole)


def stuff(content: bytes) -> bytes:
    """What a conforming client sends for ``content`` (RFC 5321 4.5.2)."""
    if content.startswith(b"."):
        content = b"." + content
    return content.replace(b"\r\n.", b"\r\n..")


body_text = st.lists(
    st.sampled_from([b"a", b"b", b".", b"\r\n", b"\r", b"\n", b"MAIL FROM:<x@y.z>"]),
    max_size=40,
).map(b"".join)


@SETTINGS
@given(body_text, st.lists(st.integers(min_value=0), max_size=8))
def test_one_data_body_gives_exactly_one_end(content, cuts):
    if content and not content.endswith(b"\r\n"):
        content += b"\r\n"
    dialogue = (
        b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"
        b"DATA\r\n" + stuff(content) + b".\r\nNOOP\r\n"
    )
    peer = run(splits(dialogue, cuts))
    ends = [e for e in peer.events if isinstance(e, events.MessageEnd)]
    aborts = [e for e in peer.events if isinstance(e, events.MessageAborted)]
    assert len(ends) + len(aborts) == 1
    assert len([e for e in peer.events if isinstance(e, events.MailFrom)]) == 1
    bare = content.count(b"\r") != content.count(b"\r\n") or content.count(
        b"\n"
    ) != content.count(b"\r\n")
    if bare:
        assert peer.queued == []
        assert aborts[0].reply == replies.BARE_NEWLINE_DATA
    else:
        assert [m.content for m in peer.queued] == [content]
    assert peer.output.endswith(b"250 2.0.0 Ok\r\n")


@SETTINGS
@given(st.binary(max_size=200), st.lists(st.integers(min_value=0), max_size=8))
def test_bdat_content_with_bare_newline_is_never_accepted(chunk, cuts):
    dialogue = (
        b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"
        + b"BDAT %d LAST\r\n" % len(chunk)
        + chunk
        + b"NOOP\r\n"
    )
    peer = run(splits(dialogue, cuts))
    bare = chunk.count(b"\r") != chunk.count(b"\r\n") or chunk.count(
        b"\n"
    ) != chunk.count(b"\r\n")
    if bare:
        assert peer.queued == []
    else:
        assert [m.content for m in peer.queued] == [chunk]
    assert peer.output.endswith(b"250 2.0.0 Ok\r\n")
