"""The listener cases of ../shared/cases, each with the exact replies.

Where a case allows several replies, DESIGN.md's reply table decides; the
chosen policy is the one documented in tlsrelay/smtp/server.py.
"""

from __future__ import annotations

from test_server_driver import HOST, Peer, codes, preamble, ready

from tlsrelay.smtp import events, replies

MAIL = b"MAIL FROM:<sender@example.com>\r\n"
RCPT = b"RCPT TO:<rcpt@example.org>\r\n"


def deny_mail(event):
    """The listener's answer for a peer that is not on the filtering list."""
    if isinstance(event, events.MailFrom):
        return replies.ACCESS_DENIED
    return None


def in_data(**config) -> Peer:
    peer = preamble(**config)
    got = peer.send(MAIL + RCPT + b"DATA\r\n")
    assert got == [
        str(replies.SENDER_OK),
        str(replies.RECIPIENT_OK),
        str(replies.START_DATA),
    ]
    return peer


# 01: end of data faked with \n.\r\n ------------------------------------------

SMUGGLE = (
    b"From: sender@example.com\r\n"
    b"Subject: first\r\n"
    b"\r\n"
    b"Testing\n"
    b".\r\n"
    b"MAIL FROM:<ceo@example.com>\r\n"
    b"RCPT TO:<rcpt@example.org>\r\n"
    b"DATA\r\n"
    b"From: ceo@example.com\r\n"
    b"\r\n"
    b"NO SMUGGLING\r\n"
    b".\r\n"
)


def test_case01_lf_dot_crlf_is_not_end_of_data():
    peer = in_data()
    assert peer.send(SMUGGLE) == [str(replies.BARE_NEWLINE_DATA)]
    assert peer.queued == []
    assert not [e for e in peer.events if isinstance(e, events.MailFrom)][1:]
    assert peer.send(b"NOOP\r\n") == [str(replies.OK)]


def test_case01_byte_by_byte_gives_the_same_single_refusal():
    peer = in_data()
    got = []
    for index in range(len(SMUGGLE)):
        got += peer.send(SMUGGLE[index : index + 1])
    assert got == [str(replies.BARE_NEWLINE_DATA)]
    assert peer.queued == []


# 04: dot-stuffing edges ------------------------------------------------------


def test_case04_dots_are_unstuffed():
    peer = in_data()
    body = b"Subject: dots\r\n\r\n..\r\n...leading\r\n.x\r\n.\r\n"
    assert peer.send(body) == [str(replies.QUEUED.format(queue_id="Q1"))]
    assert peer.queued[0].content == b"Subject: dots\r\n\r\n.\r\n..leading\r\nx\r\n"


def test_case04_dot_bare_cr_is_refused_after_the_real_end():
    peer = in_data()
    body = b"Subject: bare-cr\r\n\r\na\r\n.\rMAIL FROM:<x@example.com>\r\n.\r\n"
    assert peer.send(body) == [str(replies.BARE_NEWLINE_DATA)]
    assert peer.queued == []
    assert len([e for e in peer.events if isinstance(e, events.MailFrom)]) == 1
    assert peer.send(b"NOOP\r\n") == [str(replies.OK)]


# 05: BDAT chunk discarded when BDAT is refused ------------------------------

CHUNK = b"RCPT TO:<victim@example.net>\r\nDATA\r\n"


def test_case05_refused_bdat_chunk_is_read_and_discarded():
    assert len(CHUNK) == 36
    peer = preamble()
    segment = (
        b"MAIL FROM:<bad address>\r\n"
        + RCPT
        + b"BDAT 36 LAST\r\n"
        + CHUNK
        + b"NOOP\r\n"
    )
    assert peer.send(segment) == [
        str(replies.BAD_SENDER),
        str(replies.NEED_MAIL),
        str(replies.NEED_MAIL),
        str(replies.OK),
    ]
    assert not [e for e in peer.events if isinstance(e, events.RcptTo)]
    assert peer.queued == []


def test_case05_bdat_refused_by_the_listener_still_consumes_the_chunk():
    def refuse_data(event):
        return replies.SPOOL_FULL if isinstance(event, events.DataStart) else None

    peer = preamble(refuse_data)
    got = peer.send(MAIL + RCPT + b"BDAT 36 LAST\r\n" + CHUNK + b"NOOP\r\n")
    assert got[2:] == [str(replies.SPOOL_FULL), str(replies.OK)]
    assert peer.queued == []


def test_case05_data_after_bdat_is_refused():
    peer = preamble()
    got = peer.send(MAIL + RCPT + b"BDAT 4\r\nab\r\n" + b"DATA\r\n")
    assert got[2:] == [
        str(replies.CHUNK_OK.format(octets=4)),
        str(replies.DATA_AFTER_BDAT),
    ]


def test_case05_bdat_0_last_queues_an_empty_message():
    peer = preamble()
    got = peer.send(MAIL + RCPT + b"BDAT 0 LAST\r\n")
    assert got[2:] == [str(replies.QUEUED.format(queue_id="Q1"))]
    assert peer.queued[0].content == b""


def test_case05_bdat_chunk_has_no_dot_handling():
    peer = preamble()
    chunk = b"a\r\n.\r\n..b\r\n"
    got = peer.send(MAIL + RCPT + b"BDAT %d LAST\r\n" % len(chunk) + chunk)
    assert got[2:] == [str(replies.QUEUED.format(queue_id="Q1"))]
    assert peer.queued[0].content == chunk


# 06: plaintext pipelined behind STARTTLS --------------------------------------


def test_case06_bytes_after_starttls_are_discarded():
    peer = Peer(config={"require_tls": True})
    ehlo = peer.send(b"EHLO mail.example.com\r\n")
    assert ehlo[0].endswith("250 STARTTLS")
    segment = b"STARTTLS\r\nMAIL FROM:<attacker@example.com>\r\n" + RCPT
    assert peer.send(segment) == [str(replies.READY_TLS)]
    after = peer.send(b"EHLO mail.example.com\r\n")
    assert "STARTTLS" not in after[0]
    assert peer.send(b"DATA\r\n") == [str(replies.NEED_MAIL)]
    assert not [e for e in peer.events if isinstance(e, events.MailFrom)]
    assert peer.queued == []


def test_case06_mail_before_starttls_is_refused():
    peer = Peer(config={"require_tls": True})
    peer.send(b"EHLO mail.example.com\r\n")
    assert peer.send(MAIL) == [str(replies.NOT_TLS)]
    assert str(replies.NOT_TLS) == "530 5.7.0 Must issue a STARTTLS command first"


# 08: bare CR / LF inside a command line ---------------------------------------


def test_case08_bare_cr_and_lf_in_commands_are_refused():
    peer = preamble()
    first = b"MAIL FROM:<a@example.com>\rRCPT TO:<hidden@example.net>\r\n"
    second = b"MAIL FROM:<a@example.com> SIZE=10\nRCPT TO:<hidden@example.net>\r\n"
    assert peer.send(first) == [str(replies.BARE_NEWLINE_COMMAND)]
    assert peer.send(second) == [str(replies.BARE_NEWLINE_COMMAND)]
    assert peer.send(RCPT) == [str(replies.NEED_MAIL)]
    assert codes([str(replies.BARE_NEWLINE_COMMAND)]) == ["501 5.5.2"]
    assert not [
        e for e in peer.events if isinstance(e, events.RcptTo | events.MailFrom)
    ]


# 09: percent hack ----------------------------------------------------------------


def test_case09_unlisted_peer_gets_access_denied_at_mail_and_rcpt():
    peer = Peer(policy=deny_mail, config={"require_tls": False})
    peer.send(b"EHLO probe.example.net\r\n")
    got = peer.send(
        b"MAIL FROM:<probe@[203.0.113.66]>\r\n"
        b'RCPT TO:<"relaytest%example.net">\r\n'
        b"RCPT TO:<relaytest%example.net@relay.example.net>\r\n"
    )
    assert got == [str(replies.ACCESS_DENIED)] * 3
    assert "request TLS relay access" in replies.ACCESS_DENIED.text
    assert not [e for e in peer.events if isinstance(e, events.RcptTo)]


def test_case09_unqualified_recipient_is_refused_for_listed_peers_too():
    peer = preamble()
    peer.send(MAIL)
    got = peer.send(b'RCPT TO:<"relaytest%example.net">\r\n')
    assert got == [str(replies.UNQUALIFIED_RECIPIENT)]
    assert codes(got) == ["501 5.1.3"]


def test_case09_percent_is_an_ordinary_local_part_character():
    peer = preamble()
    got = peer.send(
        b"MAIL FROM:<a@example.com>\r\n"
        b"RCPT TO:<user%example.net@example.org>\r\n"
        b"DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n"
    )
    assert got[-1] == str(replies.QUEUED.format(queue_id="Q1"))
    [recipient] = peer.queued[0].envelope.recipients
    assert recipient.address == "user%example.net@example.org"


# 11: source routes and bang paths -----------------------------------------------


def test_case11_routes_are_stripped_and_bang_is_a_local_part():
    peer = preamble()
    got = peer.send(
        b"MAIL FROM:<a@example.com>\r\n"
        b"RCPT TO:<@relay.example.net:victim@example.org>\r\n"
        b"RCPT TO:<@a.example.net,@b.example.net:victim@example.org>\r\n"
        b"RCPT TO:<@route.example.net victim@example.org>\r\n"
        b"RCPT TO:<example.net!victim@example.org>\r\n"
        b"DATA\r\n\r\nbody\r\n.\r\n"
    )
    assert got == [
        str(replies.SENDER_OK),
        str(replies.RECIPIENT_OK),
        str(replies.RECIPIENT_OK),
        str(replies.BAD_RECIPIENT),
        str(replies.RECIPIENT_OK),
        str(replies.START_DATA),
        str(replies.QUEUED.format(queue_id="Q1")),
    ]
    assert codes([got[3]]) == ["501 5.1.3"]
    addresses = [r.address for r in peer.queued[0].envelope.recipients]
    assert addresses == [
        "victim@example.org",
        "victim@example.org",
        "example.net!victim@example.org",
    ]


def test_case11_unlisted_peer_is_refused_whatever_the_route():
    peer = Peer(policy=deny_mail, config={"require_tls": False})
    peer.send(b"EHLO probe.example.net\r\n")
    got = peer.send(MAIL + b"RCPT TO:<@relay.example.net:victim@example.org>\r\n")
    assert got == [str(replies.ACCESS_DENIED)] * 2


# 14: over-long text line in DATA ----------------------------------------------


def test_case14_long_text_line_refused_after_the_real_end():
    peer = in_data()
    body = b"Subject: long\r\n\r\n" + b"A" * 1500 + b"\r\n.\r\n"
    assert peer.send(body) == [str(replies.LINE_TOO_LONG)]
    assert codes([str(replies.LINE_TOO_LONG)]) == ["500 5.5.2"]
    assert peer.queued == []
    assert peer.send(b"NOOP\r\n") == [str(replies.OK)]


def test_case14_ten_mib_line_is_never_buffered_whole():
    peer = in_data()
    peer.send(b"Subject: long\r\n\r\n")
    piece = b"B" * 65536
    largest = 0
    for _ in range(160):  # 10 MiB
        assert peer.send(piece) == []
        largest = max(largest, len(peer.conn._buf))
    assert largest <= 8
    assert peer.send(b"\r\n.\r\n") == [str(replies.LINE_TOO_LONG)]
    assert peer.send(b"NOOP\r\n") == [str(replies.OK)]
    assert peer.queued == []


def test_case14_line_of_998_octets_is_accepted_byte_for_byte():
    peer = in_data()
    line = b"C" * 998 + b"\r\n"
    assert peer.send(line + b".\r\n") == [str(replies.QUEUED.format(queue_id="Q1"))]
    assert peer.queued[0].content == line


# 15: command line, path and local-part limits -----------------------------------


def test_case15_limits():
    peer = preamble()
    local = b"announcements-list-confirm+0123456789abcdef0123456789abcdef01234567"
    assert len(local) == 67
    long_rcpt = b"RCPT TO:<" + b"a" * 250 + b"@example.org>\r\n"
    assert len(long_rcpt) - len(b"RCPT TO:\r\n") == 264
    got = peer.send(b"MAIL FROM:<" + local + b"@example.com>\r\n")
    got += peer.send(RCPT)
    got += peer.send(long_rcpt)
    got += peer.send(b"NOOP " + b"b" * 600 + b"\r\n")
    got += peer.send(b"RSET\r\n")
    got += peer.send(b"MAIL FROM:<a@example.com> SIZE=1000 BODY=8BITMIME SMTPUTF8\r\n")
    got += peer.send(b"NOOP\r\n")
    assert got == [
        str(replies.SENDER_OK),
        str(replies.RECIPIENT_OK),
        str(replies.PATH_TOO_LONG),
        str(replies.LINE_TOO_LONG),
        str(replies.OK),
        str(replies.SENDER_OK),
        str(replies.OK),
    ]
    assert codes(got[2:4]) == ["501 5.1.3", "500 5.5.2"]
    mail = [e for e in peer.events if isinstance(e, events.MailFrom)]
    assert mail[0].sender == local.decode() + "@example.com"


def test_case15_envelope_lines_long_only_by_parameters_are_tolerated():
    peer = preamble()
    peer.send(MAIL)
    orcpt = b"rfc822;" + b"x" * 480 + b"@example.org"
    line = b"RCPT TO:<rcpt@example.org> NOTIFY=FAILURE ORCPT=" + orcpt + b"\r\n"
    assert 512 < len(line) <= 2048
    assert peer.send(line) == [str(replies.RECIPIENT_OK)]


def test_case15_hard_cap_line_is_skipped_without_buffering():
    peer = preamble()
    for _ in range(10):
        assert peer.send(b"NOOP " + b"z" * 3000) == []
        assert len(peer.conn._buf) <= 4096
    assert peer.send(b"\r\nNOOP\r\n") == [str(replies.LINE_TOO_LONG), str(replies.OK)]


# 16: early talker -------------------------------------------------------------


def test_case16_early_talker_is_refused_and_closed():
    peer = Peer(config={"require_tls": True}, greet=False)
    got = peer.send(b"EHLO mail.example.com\r\n" + MAIL + RCPT + b"DATA\r\n")
    assert got == [str(replies.EARLY_TALKER)]
    assert codes(got) == ["554 5.5.1"]
    assert peer.events == [events.ConnectionClosed("early-talker")]
    peer.conn.send_greeting()
    assert peer.conn.data_to_send() == b""
    assert peer.closed


def test_case16_patient_client_is_served():
    peer = Peer(config={"require_tls": True}, greet=False)
    peer.conn.send_greeting()
    greeting, ehlo = peer.send(b"EHLO mail.example.com\r\n")
    assert greeting == str(replies.GREETING.format(hostname=HOST))
    assert ehlo.startswith(f"250-{HOST}")
    assert peer.send(MAIL) == [str(replies.NOT_TLS)]


# 22: SMTPUTF8 -------------------------------------------------------------------


def test_case22_smtputf8_transactions():
    peer = preamble()
    assert "\r\n250-SMTPUTF8" in peer.send(b"EHLO again.example.com\r\n")[0]
    first = (
        b"MAIL FROM:<a@example.com> SMTPUTF8\r\n"
        + "RCPT TO:<δοκιμή@example.org>\r\n".encode()
        + b"DATA\r\nSubject: =?UTF-8?B?zrTOv866zrnOvM6u?=\r\n\r\nx\r\n.\r\n"
    )
    second = (
        b"MAIL FROM:<b@example.com> SMTPUTF8\r\n" + RCPT + b"DATA\r\n\r\ny\r\n.\r\n"
    )
    third = (
        b"MAIL FROM:<c@example.com>\r\n" + "RCPT TO:<δοκιμή@example.org>\r\n".encode()
    )
    assert peer.send(first)[-1] == str(replies.QUEUED.format(queue_id="Q1"))
    assert peer.send(second)[-1] == str(replies.QUEUED.format(queue_id="Q2"))
    assert peer.send(third) == [str(replies.SENDER_OK), str(replies.NEED_SMTPUTF8)]
    assert codes([str(replies.NEED_SMTPUTF8)]) == ["553 5.6.7"]
    envelope = peer.queued[0].envelope
    assert envelope.smtputf8 and envelope.recipients[0].address == "δοκιμή@example.org"


def test_case22_unicode_sender_without_smtputf8():
    peer = preamble()
    got = peer.send("MAIL FROM:<δοκιμή@example.com>\r\n".encode())
    assert got == [str(replies.NEED_SMTPUTF8)]


# 23: 8BITMIME --------------------------------------------------------------------

EIGHT_BIT = (
    "DKIM-Signature: v=1; a=rsa-sha256; d=example.com\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Grüße\r\n"
).encode()


def test_case23_8bitmime_body_kept_byte_for_byte():
    peer = preamble()
    assert "\r\n250-8BITMIME" in peer.send(b"EHLO again.example.com\r\n")[0]
    got = peer.send(b"MAIL FROM:<a@example.com> BODY=8BITMIME\r\n" + RCPT + b"DATA\r\n")
    got += peer.send(EIGHT_BIT + b".\r\n")
    assert got[-1] == str(replies.QUEUED.format(queue_id="Q1"))
    assert peer.queued[0].content == EIGHT_BIT
    assert peer.queued[0].envelope.body == "8BITMIME"


def test_case23_undeclared_8bit_content_is_treated_as_8bitmime():
    peer = in_data()
    assert peer.send(EIGHT_BIT + b".\r\n") == [
        str(replies.QUEUED.format(queue_id="Q1"))
    ]
    assert peer.queued[0].envelope.body == "8BITMIME"


def test_case23_ascii_content_stays_7bit():
    peer = in_data()
    peer.send(b"Subject: x\r\n\r\nplain\r\n.\r\n")
    assert peer.queued[0].envelope.body == "7BIT"


# 24: null sender ---------------------------------------------------------------


def test_case24_null_sender_accepted_also_with_several_recipients():
    peer = preamble()
    got = peer.send(
        b"MAIL FROM:<>\r\nRCPT TO:<nobody@example.org>\r\n"
        b"DATA\r\nSubject: Undelivered\r\n\r\nreport\r\n.\r\n"
    )
    assert got[0] == str(replies.SENDER_OK)
    assert got[-1] == str(replies.QUEUED.format(queue_id="Q1"))
    assert peer.queued[0].envelope.sender == ""
    got = peer.send(
        b"MAIL FROM:<>\r\nRCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"
    )
    assert got == [
        str(replies.SENDER_OK),
        str(replies.RECIPIENT_OK),
        str(replies.RECIPIENT_OK),
    ]


def test_design_reply_table_constants():
    table = {
        replies.NOT_TLS: "530 5.7.0",
        replies.ACCESS_DENIED: "554 5.7.1",
        replies.ACCESS_PENDING: "450 4.7.1",
        replies.TOO_BIG: "552 5.3.4",
        replies.SPOOL_FULL: "452 4.3.1",
        replies.NO_SNAPSHOT: "451 4.3.0",
        replies.TLS_UNAVAILABLE: "454 4.7.0",
    }
    for reply, code in table.items():
        assert f"{reply.code} {reply.status}" == code
    queued = str(replies.QUEUED.format(queue_id="4XyZ"))
    assert queued.startswith("250 2.0.0 ") and "4XyZ" in queued


def test_ready_helper_speaks_ehlo():
    assert ready().conn.esmtp
