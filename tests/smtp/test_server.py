"""Unit and table tests of the SMTP server core's state machine."""

from __future__ import annotations

import pytest
from test_server_driver import Peer, codes, preamble, ready

from tlsrelay.smtp import address, events, replies
from tlsrelay.smtp.events import CLOSED, NEED_DATA
from tlsrelay.smtp.server import (
    COMMANDS,
    Command,
    ServerConfig,
    ServerConnection,
    UsageError,
)

MAIL = b"MAIL FROM:<a@example.com>\r\n"
RCPT = b"RCPT TO:<b@example.org>\r\n"
QUEUED = str(replies.QUEUED.format(queue_id="Q1"))


# ----- one command at a time, on a session that said EHLO ----------------------


@pytest.mark.parametrize(
    "line, reply",
    [
        (b"NOOP\r\n", replies.OK),
        (b"NOOP anything\r\n", replies.OK),
        (b"noop\r\n", replies.OK),
        (b"RSET\r\n", replies.OK),
        (b"RSET x\r\n", replies.NO_ARGUMENTS),
        (b"VRFY postmaster\r\n", replies.CANNOT_VRFY),
        (b"VRFY\r\n", replies.VRFY_SYNTAX),
        (b"HELP\r\n", replies.HELP),
        (b"QUIT\r\n", replies.BYE),
        (b"EXPN list\r\n", replies.UNKNOWN_COMMAND),
        (b"GET / HTTP/1.1\r\n", replies.UNKNOWN_COMMAND),
        (b"\r\n", replies.UNKNOWN_COMMAND),
        (b"MAIL TO:<a@example.com>\r\n", replies.MAIL_SYNTAX),
        (b"MAIL FROM:a@example.com\r\n", replies.BAD_SENDER),
        (b"MAIL FROM:<a@example.com\r\n", replies.BAD_SENDER),
        (b"MAIL FROM:<a@@example.com>\r\n", replies.BAD_SENDER),
        (b"MAIL FROM:<a@example.com>x\r\n", replies.BAD_SENDER),
        (b"MAIL FROM:<a@example.com> FOO=1\r\n", replies.UNKNOWN_PARAMETER),
        (b"MAIL FROM:<a@example.com> SIZE=x\r\n", replies.BAD_PARAMETER),
        (b"MAIL FROM:<a@example.com> SIZE=99999999999\r\n", replies.TOO_BIG),
        (b"MAIL FROM:<a@example.com> BODY=BINARYMIME\r\n", replies.BAD_PARAMETER),
        (b"MAIL FROM:<a@example.com> SMTPUTF8=yes\r\n", replies.BAD_PARAMETER),
        (b"MAIL FROM:<a@example.com> RET=ALL\r\n", replies.BAD_PARAMETER),
        (b"MAIL FROM:<a@example.com> ENVID=a=b\r\n", replies.BAD_PARAMETER),
        (b"MAIL FROM:<a@example.com> ENVID=a+2\r\n", replies.BAD_PARAMETER),
        (b"MAIL FROM:<a@example.com> SIZE=1 SIZE=2\r\n", replies.BAD_PARAMETER),
        (b"RCPT TO:<b@example.org>\r\n", replies.NEED_MAIL),
        (b"DATA\r\n", replies.NEED_MAIL),
        (b"STARTTLS now\r\n", replies.NO_ARGUMENTS),
        (b"EHLO\r\n", replies.HELO_SYNTAX.format(verb="EHLO")),
        (b"HELO a b\r\n", replies.HELO_SYNTAX.format(verb="HELO")),
    ],
)
def test_command_table(line, reply):
    peer = ready()
    got = peer.send(line)
    assert codes(got) == codes([str(reply)])
    assert got[0].split(":")[0] == str(reply).split(":")[0]


def test_every_command_is_in_the_table_once():
    verbs = "EHLO HELO STARTTLS MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP"
    assert sorted(COMMANDS) == sorted(verbs.split())
    allowed = {verb for verb, row in COMMANDS.items() if row.before_tls}
    assert allowed == {"EHLO", "HELO", "STARTTLS", "RSET", "NOOP", "QUIT", "HELP"}


@pytest.mark.parametrize("verb", ["MAIL", "RCPT", "DATA", "VRFY"])
def test_envelope_commands_need_tls_on_submission(verb):
    peer = Peer(config={"require_tls": True})
    peer.send(b"EHLO c.example\r\n")
    assert peer.send(verb.encode() + b" x\r\n") == [str(replies.NOT_TLS)]


def test_bdat_before_tls_still_consumes_its_chunk():
    peer = Peer(config={"require_tls": True})
    peer.send(b"EHLO c.example\r\n")
    got = peer.send(b"BDAT 6\r\nQUIT\r\nNOOP\r\n")
    assert got == [str(replies.NOT_TLS), str(replies.OK)]


def test_mail_needs_helo_first():
    peer = Peer()
    assert peer.send(MAIL) == [str(replies.NEED_HELO)]


def test_helo_session_takes_no_esmtp_parameters():
    peer = Peer()
    assert peer.send(b"HELO c.example\r\n") == [
        str(replies.HELO_OK.format(hostname="relay.example.net"))
    ]
    got = peer.send(b"MAIL FROM:<a@example.com> SIZE=10\r\n")
    assert got == [str(replies.UNKNOWN_PARAMETER.format(name="SIZE"))]
    assert peer.send(MAIL) == [str(replies.SENDER_OK)]


def test_ehlo_keywords():
    peer = ready(max_message_size=1000)
    lines = peer.output.decode().split("\r\n")
    assert lines[1:11] == [
        "250-relay.example.net",
        "250-PIPELINING",
        "250-SIZE 1000",
        "250-8BITMIME",
        "250-SMTPUTF8",
        "250-ENHANCEDSTATUSCODES",
        "250-DSN",
        "250-CHUNKING",
        "250 STARTTLS",
        "",
    ]


@pytest.mark.parametrize(
    "config, offered",
    [
        ({"tls_active": False, "starttls_available": True}, True),
        ({"tls_active": False, "starttls_available": False}, False),
        ({"tls_active": True, "starttls_available": True}, False),
    ],
)
def test_starttls_offered_only_before_tls_and_when_available(config, offered):
    peer = ready(**config)
    assert ("STARTTLS" in peer.output.decode()) == offered


def test_starttls_refusals():
    assert ready(tls_active=True).send(b"STARTTLS\r\n") == [str(replies.ALREADY_TLS)]
    unavailable = ready(starttls_available=False)
    assert unavailable.send(b"STARTTLS\r\n") == [str(replies.TLS_UNAVAILABLE)]
    assert Peer().send(b"STARTTLS\r\n") == [str(replies.NEED_HELO)]


def test_second_starttls_after_tls_is_refused():
    peer = preamble()
    assert peer.send(b"STARTTLS\r\n") == [str(replies.ALREADY_TLS)]
    assert codes([str(replies.ALREADY_TLS)]) == ["503 5.5.1"]


def test_starttls_forgets_helo_and_transaction():
    peer = ready()
    peer.send(MAIL)
    peer.send(b"STARTTLS\r\n")
    assert peer.conn.tls_active
    assert peer.send(MAIL) == [str(replies.NEED_HELO)]


def test_data_received_while_waiting_for_tls_is_discarded():
    conn = ServerConnection(ServerConfig("relay.example.net"))
    conn.send_greeting()
    conn.receive_data(b"EHLO c.example\r\nSTARTTLS\r\n")
    assert isinstance(conn.next_event(), events.Hello)
    assert isinstance(conn.next_event(), events.StartTLS)
    conn.receive_data(b"\x16\x03\x01 handshake bytes MAIL FROM:<x@y.z>\r\n")
    assert conn.next_event() is NEED_DATA
    conn.tls_started()
    conn.receive_data(b"NOOP\r\n")
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send().endswith(
        b"220 2.0.0 Ready to start TLS\r\n250 2.0.0 Ok\r\n"
    )


def test_nested_mail_and_rset():
    peer = ready()
    assert peer.send(MAIL + MAIL) == [str(replies.SENDER_OK), str(replies.NESTED_MAIL)]
    assert peer.send(b"RSET\r\n" + MAIL) == [str(replies.OK), str(replies.SENDER_OK)]


def test_ehlo_resets_the_transaction():
    peer = ready()
    peer.send(MAIL + RCPT)
    peer.send(b"EHLO c.example\r\n")
    assert peer.send(b"DATA\r\n") == [str(replies.NEED_MAIL)]


def test_data_needs_a_recipient():
    peer = ready()
    assert peer.send(MAIL + b"DATA\r\n")[1] == str(replies.NEED_RCPT)


def test_whole_transaction_pipelined_in_one_segment():
    peer = ready()
    got = peer.send(
        MAIL + RCPT + RCPT + b"DATA\r\nSubject: a\r\n\r\nhi\r\n.\r\nQUIT\r\n"
    )
    assert got == [
        str(replies.SENDER_OK),
        str(replies.RECIPIENT_OK),
        str(replies.RECIPIENT_OK),
        str(replies.START_DATA),
        QUEUED,
        str(replies.BYE),
    ]
    assert peer.queued[0].content == b"Subject: a\r\n\r\nhi\r\n"
    assert peer.events[-1] == events.ConnectionClosed("quit")
    assert peer.conn.next_event() is CLOSED


def test_replies_wait_for_the_application():
    conn = ServerConnection(ServerConfig("relay.example.net", require_tls=False))
    conn.send_greeting()
    conn.data_to_send()
    conn.receive_data(b"EHLO c.example\r\n" + MAIL + b"NOOP\r\n")
    assert isinstance(conn.next_event(), events.Hello)
    assert isinstance(conn.next_event(), events.MailFrom)
    with pytest.raises(UsageError):
        conn.next_event()
    with pytest.raises(UsageError):
        conn.accept_message("Q")
    conn.reject(replies.ACCESS_PENDING)
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send().split(b"\r\n")[-3:] == [
        str(replies.ACCESS_PENDING).encode(),
        b"250 2.0.0 Ok",
        b"",
    ]


def test_reject_needs_an_error_reply_and_a_pending_event():
    conn = ServerConnection(ServerConfig("relay.example.net"))
    with pytest.raises(UsageError):
        conn.accept()
    with pytest.raises(UsageError):
        conn.reject(replies.OK)


def test_rejected_mail_refusal_repeats_for_rcpt_data_and_bdat_until_rset():
    def pending(event):
        return replies.ACCESS_PENDING if isinstance(event, events.MailFrom) else None

    peer = ready(pending)
    got = peer.send(MAIL + RCPT + b"DATA\r\nBDAT 3 LAST\r\nabc")
    assert got == [str(replies.ACCESS_PENDING)] * 4
    assert peer.send(b"RSET\r\n" + RCPT) == [str(replies.OK), str(replies.NEED_MAIL)]


def test_rejected_recipient_is_not_in_the_envelope():
    def refuse_b(event):
        if isinstance(event, events.RcptTo) and event.address.startswith("b@"):
            return replies.Reply(550, "5.1.1", "No such user")
        return None

    peer = ready(refuse_b)
    peer.send(MAIL + RCPT + b"RCPT TO:<c@example.org>\r\nDATA\r\n\r\n.\r\n")
    assert [r.address for r in peer.queued[0].envelope.recipients] == ["c@example.org"]


def test_message_rejected_at_the_end_is_not_queued():
    def spool_full(event):
        return replies.SPOOL_FULL if isinstance(event, events.MessageEnd) else None

    peer = ready(spool_full)
    got = peer.send(MAIL + RCPT + b"DATA\r\nx\r\n.\r\n" + RCPT)
    assert got[-2:] == [str(replies.SPOOL_FULL), str(replies.NEED_MAIL)]


def test_data_refused_by_the_application_resets_the_transaction():
    def refuse(event):
        return replies.NO_SNAPSHOT if isinstance(event, events.DataStart) else None

    peer = ready(refuse)
    got = peer.send(MAIL + RCPT + b"DATA\r\n" + b"NOOP\r\n")
    assert got[2:] == [str(replies.NO_SNAPSHOT), str(replies.OK)]


# ----- DSN and ESMTP parameters ----------------------------------------------


def test_dsn_parameters_are_kept_with_the_envelope():
    peer = ready()
    peer.send(
        b"MAIL FROM:<a@example.com> RET=hdrs ENVID=QQ+2B1 SIZE=10 BODY=7bit\r\n"
        b"RCPT TO:<b@example.org> NOTIFY=failure,delay ORCPT=rfc822;b+40example.org\r\n"
        b"RCPT TO:<c@example.org> NOTIFY=NEVER\r\n"
        b"DATA\r\nx\r\n.\r\n"
    )
    envelope = peer.queued[0].envelope
    assert (envelope.ret, envelope.envid, envelope.body) == ("HDRS", "QQ+2B1", "7BIT")
    assert envelope.recipients == [
        events.Recipient("b@example.org", "FAILURE,DELAY", "rfc822;b+40example.org"),
        events.Recipient("c@example.org", "NEVER", None),
    ]
    mail = next(e for e in peer.events if isinstance(e, events.MailFrom))
    assert mail.params == events.MailParams(
        size=10, body="7BIT", ret="HDRS", envid="QQ+2B1"
    )


@pytest.mark.parametrize(
    "params",
    [
        b"NOTIFY=NEVER,FAILURE",
        b"NOTIFY=",
        b"NOTIFY=SOMETIMES",
        b"NOTIFY=DELAY,DELAY",
        b"ORCPT=rfc822",
        b"ORCPT=rfc822;a=b",
        b"ORCPT=;a@b",
        b"ORCPT=rfc822;" + b"x" * 500,
    ],
)
def test_bad_dsn_recipient_parameters(params):
    peer = ready()
    peer.send(MAIL)
    got = peer.send(b"RCPT TO:<b@example.org> " + params + b"\r\n")
    assert codes(got) == ["501 5.5.4"]


@pytest.mark.parametrize(
    "value, ok",
    [
        ("abc", True),
        ("a+2Bb", True),
        ("a+2bb", False),
        ("a+", False),
        ("a=b", False),
        ("", True),
        ("a b", False),
        ("é", False),
        ("+3D", True),
    ],
)
def test_xtext(value, ok):
    assert address.is_xtext(value) == ok


# ----- addresses ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, expected",
    [
        ("<a@example.org>", "a@example.org"),
        ('<"a b"@example.org>', '"a b"@example.org'),
        ('<"a>b"@example.org>', '"a>b"@example.org'),
        ('<"a\\"b"@example.org>', '"a\\"b"@example.org'),
        ("<a.b+c@example.org>", "a.b+c@example.org"),
        ("<@x.example:a@example.org>", "a@example.org"),
        ("<a!b%c@example.org>", "a!b%c@example.org"),
        ("<" + "l" * 100 + "@example.org>", "l" * 100 + "@example.org"),
    ],
)
def test_recipient_paths(path, expected):
    text, rest = address.split_path(path, address.RECIPIENT_ERRORS)
    assert rest == ""
    assert address.parse_recipient(text, smtputf8=False, postmaster="") == expected


@pytest.mark.parametrize(
    "path, reply",
    [
        ("<>", replies.BAD_RECIPIENT),
        ("<a>", replies.UNQUALIFIED_RECIPIENT),
        ("<postmaster>", replies.UNQUALIFIED_RECIPIENT),
        ("<a@>", replies.BAD_RECIPIENT),
        ("<a..b@example.org>", replies.BAD_RECIPIENT),
        ("<.a@example.org>", replies.BAD_RECIPIENT),
        ("<a@-example.org>", replies.BAD_RECIPIENT),
        ("<a@example..org>", replies.BAD_RECIPIENT),
        ("<a@[300.1.1.1]>", replies.BAD_RECIPIENT),
        ("<a@[IPv6:zz]>", replies.BAD_RECIPIENT),
        ("<a@[192.0.2.1]>", replies.LITERAL_RECIPIENT),
        ("<a@[IPv6:2001:db8::1]>", replies.LITERAL_RECIPIENT),
        ("<@x.example a@example.org>", replies.BAD_RECIPIENT),
        ("<@x.example,y.example:a@example.org>", replies.BAD_RECIPIENT),
        ("<a b@example.org>", replies.BAD_RECIPIENT),
        ("<é@example.org>", replies.NEED_SMTPUTF8),
        ("<a@exämple.org>", replies.NEED_SMTPUTF8),
        ("<" + "a" * 250 + "@example.org>", replies.PATH_TOO_LONG),
    ],
)
def test_bad_recipient_paths(path, reply):
    with pytest.raises(address.AddressError) as err:
        address.parse_recipient(path, smtputf8=False, postmaster="")
    assert err.value.reply == reply


def test_postmaster_maps_to_configured_address():
    peer = ready(postmaster="abuse@provider.example")
    peer.send(MAIL)
    peer.send(b"RCPT TO:<Postmaster>\r\nDATA\r\nx\r\n.\r\n")
    [recipient] = peer.queued[0].envelope.recipients
    assert recipient.address == "abuse@provider.example"


def test_smtputf8_allows_utf8_domains_and_quoted_parts():
    text = '<"δ κ"@παράδειγμα.example>'
    assert address.parse_recipient(text, True, "") == text[1:-1]


def test_space_after_colon_is_tolerated():
    peer = ready()
    assert peer.send(b"MAIL FROM: <a@example.com>\r\n") == [str(replies.SENDER_OK)]
    assert peer.send(b"RCPT TO: <b@example.org>\r\n") == [str(replies.RECIPIENT_OK)]


def test_invalid_utf8_address_is_a_syntax_error():
    peer = ready()
    got = peer.send(b"MAIL FROM:<\xff@example.com> SMTPUTF8\r\n")
    assert got == [str(replies.BAD_SENDER)]


# ----- limits -------------------------------------------------------------------


def test_too_many_recipients():
    peer = ready(max_recipients=2)
    got = peer.send(MAIL + RCPT + RCPT + RCPT)
    assert got[1:] == [str(replies.RECIPIENT_OK)] * 2 + [
        str(replies.TOO_MANY_RECIPIENTS)
    ]
    assert codes(got[-1:]) == ["452 4.5.3"]


def test_too_many_errors_closes_with_421():
    peer = ready(max_errors=3)
    got = peer.send(b"FOO\r\nFOO\r\nFOO\r\nNOOP\r\n")
    assert got == [str(replies.UNKNOWN_COMMAND)] * 3 + [str(replies.TOO_MANY_ERRORS)]
    assert codes(got[-1:]) == ["421 4.7.0"]
    assert peer.closed
    assert peer.events[-1] == events.ConnectionClosed("too-many-errors")


def test_application_rejections_count_as_errors():
    peer = ready(lambda e: replies.ACCESS_DENIED, max_errors=2)
    got = peer.send(MAIL + MAIL + MAIL)
    assert got == [str(replies.ACCESS_DENIED)] * 2 + [str(replies.TOO_MANY_ERRORS)]


def test_too_many_junk_commands_closes():
    peer = ready(max_junk_commands=3)
    got = peer.send(b"NOOP\r\n" * 5)
    assert got == [str(replies.OK)] * 3 + [str(replies.TOO_MANY_COMMANDS)]


def test_mail_line_over_the_envelope_cap_is_too_long():
    peer = ready()
    line = b"MAIL FROM:<a@example.com> ENVID=" + b"x" * 2100 + b"\r\n"
    assert peer.send(line + b"NOOP\r\n") == [
        str(replies.LINE_TOO_LONG),
        str(replies.OK),
    ]


def test_noop_line_of_exactly_512_octets_is_fine():
    peer = ready()
    line = b"NOOP " + b"x" * (512 - 7) + b"\r\n"
    assert len(line) == 512
    assert peer.send(line) == [str(replies.OK)]
    assert peer.send(line[:-2] + b"y\r\n") == [str(replies.LINE_TOO_LONG)]


def test_message_over_the_size_limit_is_refused_at_its_end():
    peer = ready(max_message_size=100)
    peer.send(MAIL + RCPT + b"DATA\r\n")
    got = peer.send(b"x" * 60 + b"\r\n" + b"y" * 60 + b"\r\n.\r\nNOOP\r\n")
    assert got == [str(replies.TOO_BIG), str(replies.OK)]
    assert peer.aborted == [events.MessageAborted(replies.TOO_BIG, "too-big")]
    assert peer.queued == []


def test_message_of_exactly_the_size_limit_is_accepted():
    peer = ready(max_message_size=10)
    peer.send(MAIL + RCPT + b"DATA\r\n")
    assert peer.send(b"12345678\r\n.\r\n") == [QUEUED]
    assert peer.queued[0].envelope.size == 10


# ----- DATA -----------------------------------------------------------------------


def test_empty_message_right_after_354():
    peer = ready()
    assert peer.send(MAIL + RCPT + b"DATA\r\n.\r\n")[-1] == QUEUED
    assert peer.queued[0].content == b""


@pytest.mark.parametrize(
    "body",
    [b"a\nb\r\n", b"a\rb\r\n", b"a\r\r\n", b"\nx\r\n", b"x\r\n\n.\r\n", b"..\r\r\n"],
)
def test_bare_cr_or_lf_in_data_is_refused(body):
    peer = ready()
    peer.send(MAIL + RCPT + b"DATA\r\n")
    assert peer.send(body + b".\r\n" + b"NOOP\r\n") == [
        str(replies.BARE_NEWLINE_DATA),
        str(replies.OK),
    ]
    assert peer.aborted[0].reason == "bare-newline"


def test_eof_mid_message_aborts_and_closes():
    peer = ready()
    peer.send(MAIL + RCPT + b"DATA\r\npartial\r\n")
    peer.send(b"")
    assert peer.aborted == [events.MessageAborted(None, "eof")]
    assert peer.events[-1] == events.ConnectionClosed("eof")


def test_eof_between_commands_closes():
    peer = ready()
    peer.send(b"NOO")
    peer.send(b"")
    assert peer.events[-1] == events.ConnectionClosed("eof")
    assert peer.aborted == []


def test_body_events_carry_only_complete_lines_of_each_read():
    peer = ready()
    peer.send(MAIL + RCPT + b"DATA\r\n")
    peer.send(b"line one\r\nline t")
    peer.send(b"wo\r\n.")
    peer.send(b"\r\n")
    bodies = [e.data for e in peer.events if isinstance(e, events.Body)]
    assert bodies == [b"line one\r\n", b"line two\r\n"]


# ----- BDAT ---------------------------------------------------------------------


def test_bdat_chunks_make_one_message():
    peer = ready()
    got = peer.send(MAIL + RCPT + b"BDAT 5\r\nab\r\nc")
    got += peer.send(b"BDAT 3 LAST\r\nd\r\n")
    assert got[2:] == [str(replies.CHUNK_OK.format(octets=5)), QUEUED]
    assert peer.queued[0].content == b"ab\r\ncd\r\n"
    starts = [e for e in peer.events if isinstance(e, events.DataStart)]
    assert len(starts) == 1 and starts[0].chunking


def test_bdat_bare_lf_across_chunks_is_refused_and_ends_the_transaction():
    peer = ready()
    got = peer.send(
        MAIL + RCPT + b"BDAT 2\r\na\r" + b"BDAT 2\r\nb\n" + b"BDAT 1 LAST\r\nc"
    )
    assert got[2:] == [
        str(replies.CHUNK_OK.format(octets=2)),
        str(replies.BARE_NEWLINE_DATA),
        str(replies.NEED_MAIL),
    ]
    assert peer.queued == []


def test_bdat_crlf_split_across_chunks_is_fine():
    peer = ready()
    peer.send(MAIL + RCPT + b"BDAT 2\r\na\r" + b"BDAT 2 LAST\r\n\nb")
    assert peer.queued[0].content == b"a\r\nb"


def test_bdat_too_big_is_refused_after_reading_the_chunk():
    peer = ready(max_message_size=10)
    got = peer.send(MAIL + RCPT + b"BDAT 20\r\n" + b"z" * 20 + b"NOOP\r\n")
    assert got[2:] == [str(replies.TOO_BIG), str(replies.OK)]


def test_bdat_with_unparsable_size_closes_the_session():
    peer = ready()
    got = peer.send(MAIL + RCPT + b"BDAT x\r\nRCPT TO:<v@example.net>\r\n")
    assert got[2:] == [str(replies.BDAT_SYNTAX), str(replies.BDAT_UNSYNCED)]
    assert peer.events[-1] == events.ConnectionClosed("bdat-syntax")


def test_bdat_chunk_split_over_many_reads():
    peer = ready()
    peer.send(MAIL + RCPT + b"BDAT 10 LAST\r\n")
    for octet in b"0123456789":
        peer.send(bytes([octet]))
    assert peer.queued[0].content == b"0123456789"


# ----- robustness ----------------------------------------------------------------


def test_a_bug_in_the_core_answers_421_and_closes(monkeypatch):
    peer = ready()

    def broken(self, arg):
        raise ValueError("secret internals")

    monkeypatch.setitem(COMMANDS, "NOOP", Command("NOOP", broken, True, True))
    got = peer.send(b"NOOP\r\nNOOP\r\n")
    assert got == [str(replies.INTERNAL_ERROR)]
    assert b"secret" not in peer.output
    assert peer.conn.next_event() is CLOSED


def test_application_close_sends_its_reply():
    peer = ready()
    peer.conn.close(replies.TIMEOUT)
    assert peer.conn.data_to_send() == replies.TIMEOUT.to_bytes()
    assert peer.conn.next_event() is CLOSED
    peer.conn.receive_data(b"NOOP\r\n")
    assert peer.conn.next_event() is CLOSED


def test_reply_formats():
    assert (
        replies.QUEUED.format(queue_id="A1").to_bytes()
        == b"250 2.0.0 Ok: queued as A1\r\n"
    )
    assert replies.Reply(250, "", "a\nb").to_bytes() == b"250-a\r\n250 b\r\n"


def test_bdat_without_chunking_is_not_implemented_but_still_consumed():
    peer = ready(chunking=False)
    assert "CHUNKING" not in peer.output.decode()
    got = peer.send(MAIL + RCPT + b"BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n")
    assert got[2:] == [str(replies.NOT_IMPLEMENTED), str(replies.OK)]
    assert codes(got[2:3]) == ["502 5.5.1"]


def test_over_long_bdat_line_closes_since_its_chunk_cannot_be_trusted():
    peer = ready()
    got = peer.send(MAIL + RCPT + b"BDAT 6 LAST" + b" " * 5000 + b"\r\nNOOP\r\n")
    assert got[2:] == [str(replies.LINE_TOO_LONG), str(replies.BDAT_UNSYNCED)]
    assert peer.events[-1] == events.ConnectionClosed("bdat-syntax")
