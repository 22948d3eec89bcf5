"""The SMTP client core, driven in memory: scripted server bytes in, our bytes out."""

from __future__ import annotations

import pytest

from tlsrelay.smtp import client as c

EHLO_PLAIN = b"250-mx.example.org\r\n250-PIPELINING\r\n250 STARTTLS\r\n"


def message(*rcpts: str, content: bytes = b"Subject: t\r\n\r\nhi\r\n", **kw):
    recipients = tuple(
        r if isinstance(r, c.OutboundRecipient) else c.OutboundRecipient(r)
        for r in rcpts
    )
    return c.OutboundMessage(
        kw.pop("sender", "a@example.com"), recipients, content, **kw
    )


def events(conn: c.ClientConnection) -> list[c.Event]:
    found = []
    while (event := conn.next_event()) not in (c.NEED_DATA, c.CLOSED):
        found.append(event)
    return found


def ready(caps: list[str], level=c.TlsLevel.MAY) -> c.ClientConnection:
    """A session past greeting and EHLO, in plaintext, with CAPS offered."""
    conn = c.ClientConnection(c.ClientConfig("relay.example", level))
    conn.receive_data(b"220 mx ESMTP\r\n")
    assert conn.data_to_send() == b"EHLO relay.example\r\n"
    lines = ["mx.example.org", *caps]
    reply = "".join(
        f"250{'-' if i < len(lines) - 1 else ' '}{line}\r\n"
        for i, line in enumerate(lines)
    )
    conn.receive_data(reply.encode())
    assert [type(e) for e in events(conn)] == [c.Ready]
    return conn


def results(conn) -> list[tuple[str, str]]:
    found = events(conn)
    done = [e for e in found if isinstance(e, c.TransactionDone)]
    assert len(done) == 1, found
    return [(r.recipient.address, str(r.reply)) for r in done[0].results]


# -- pure functions ----------------------------------------------------------


@pytest.mark.parametrize(
    "content, wire",
    [
        (b"", b".\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"x\r\n.\r\n", b"x\r\n..\r\n.\r\n"),
        # case 04: body lines ".", "..leading", "x"
        (
            b"S: d\r\n\r\n.\r\n..leading\r\nx\r\n",
            b"S: d\r\n\r\n..\r\n...leading\r\nx\r\n.\r\n",
        ),
        (b"no final newline", b"no final newline\r\n.\r\n"),
        (b"a\r\n.", b"a\r\n..\r\n.\r\n"),
    ],
)
def test_dot_stuff(content, wire):
    assert c.dot_stuff(content) == wire


@pytest.mark.parametrize(
    "content, bare",
    [
        (b"a\r\nb\r\n", False),
        (b"a\nb\r\n", True),
        (b"a\rb\r\n", True),
        (b"a\r\n.\n", True),
        (b"a\r\r\n", True),
        (b"", False),
    ],
)
def test_bare_line_endings(content, bare):
    assert c.has_bare_line_ending(content) is bare


@pytest.mark.parametrize(
    "level, offered, action",
    [
        (c.TlsLevel.NONE, True, c.TlsAction.PLAINTEXT),
        (c.TlsLevel.NONE, False, c.TlsAction.PLAINTEXT),
        (c.TlsLevel.MAY, True, c.TlsAction.STARTTLS),
        (c.TlsLevel.MAY, False, c.TlsAction.PLAINTEXT),
        (c.TlsLevel.ENCRYPT, True, c.TlsAction.STARTTLS),
        (c.TlsLevel.ENCRYPT, False, c.TlsAction.DEFER),
    ],
)
def test_tls_action(level, offered, action):
    assert c.tls_action(level, offered) is action


@pytest.mark.parametrize(
    "line, enhanced",
    [
        ("5.1.1 No such user", "5.1.1"),
        ("No such user", "5.0.0"),
        ("4.1.1 wrong class", "5.0.0"),
        ("5.1.10 null MX", "5.1.10"),
    ],
)
def test_enhanced_status(line, enhanced):
    assert c.Reply(550, (line,)).enhanced == enhanced


def test_parser_waits_for_final_line():
    parser = c.ReplyParser()
    parser.feed(b"220-mx.example.org ESMTP\r\n220-still greeting")
    assert parser.next_reply() is None
    parser.feed(b"\r\n220 done\r\n")
    assert parser.next_reply() == c.Reply(
        220, ("mx.example.org ESMTP", "still greeting", "done")
    )


@pytest.mark.parametrize(
    "data", [b"hello\r\n", b"25\r\n", b"250-a\r\n251 b\r\n", b"999 x\r\n", b"2" * 5000]
)
def test_parser_refuses_malformed(data):
    parser = c.ReplyParser()
    parser.feed(data)
    with pytest.raises(c.ProtocolError):
        parser.next_reply()


# -- dialogue ----------------------------------------------------------------


def test_greeting_is_acted_on_only_at_its_final_line():
    # case 16: EHLO only after "220 ", never after "220-".
    conn = c.ClientConnection(c.ClientConfig("relay.example"))
    conn.receive_data(b"220-mx.example.org ESMTP\r\n")
    assert conn.data_to_send() == b""
    conn.receive_data(b"220 mx.example.org ready\r\n")
    assert conn.data_to_send() == b"EHLO relay.example\r\n"


def test_helo_fallback_when_ehlo_is_unknown():
    conn = c.ClientConnection(c.ClientConfig("relay.example"))
    conn.receive_data(b"220 old\r\n")
    conn.data_to_send()
    conn.receive_data(b"502 5.5.1 what\r\n")
    assert conn.data_to_send() == b"HELO relay.example\r\n"
    conn.receive_data(b"250 old\r\n")
    assert events(conn) == [c.Ready(c.Capabilities(), False)]


def test_greeting_refusal_fails_the_session():
    conn = c.ClientConnection(c.ClientConfig("relay.example"))
    conn.receive_data(b"554 5.7.1 go away\r\n")
    assert events(conn) == [c.SessionFailed(c.Reply(554, ("5.7.1 go away",)), True)]
    assert conn.next_event() is c.CLOSED


def test_starttls_discards_injected_plaintext():
    # case 07: the 250 lines after the 220 are never used.
    conn = c.ClientConnection(c.ClientConfig("relay.example"))
    conn.receive_data(b"220 mx\r\n")
    conn.data_to_send()
    conn.receive_data(EHLO_PLAIN)
    assert conn.data_to_send() == b"STARTTLS\r\n"
    injected = b"250-mx.example.org\r\n250 AUTH PLAIN\r\n"
    conn.receive_data(b"220 2.0.0 Go ahead\r\n" + injected)
    assert events(conn) == [c.StartTLS()]
    assert conn.discarded_after_starttls == len(injected)
    conn.receive_data(b"250 more plaintext before the handshake\r\n")
    conn.tls_started()
    assert conn.data_to_send() == b"EHLO relay.example\r\n"
    conn.receive_data(b"250-mx.example.org\r\n250 8BITMIME\r\n")
    [event] = events(conn)
    assert event == c.Ready(c.Capabilities({"8BITMIME": ""}), True)


def test_starttls_refused_never_continues_in_plaintext():
    conn = c.ClientConnection(c.ClientConfig("relay.example"))
    conn.receive_data(b"220 mx\r\n")
    conn.data_to_send()
    conn.receive_data(EHLO_PLAIN)
    conn.data_to_send()
    conn.receive_data(b"454 4.7.0 TLS not available\r\n")
    assert events(conn) == [c.SessionFailed(c.STARTTLS_REFUSED, False)]
    assert conn.data_to_send() == b""


def test_tls_required_but_not_offered_defers():
    # case 20, outbound: no plaintext under a TLS-required policy.
    conn = c.ClientConnection(c.ClientConfig("relay.example", c.TlsLevel.ENCRYPT))
    conn.receive_data(b"220 mx\r\n")
    conn.data_to_send()
    conn.receive_data(b"250-mx\r\n250 PIPELINING\r\n")
    assert events(conn) == [c.SessionFailed(c.TLS_NOT_OFFERED, False)]
    assert conn.data_to_send() == b""


def test_pipelined_transaction_one_write():
    conn = ready(["PIPELINING", "8BITMIME"])
    conn.send_message(message("b@example.org", "c@example.org"))
    assert conn.data_to_send() == (
        b"MAIL FROM:<a@example.com>\r\n"
        b"RCPT TO:<b@example.org>\r\n"
        b"RCPT TO:<c@example.org>\r\n"
        b"DATA\r\n"
    )
    conn.receive_data(b"250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n")
    assert conn.data_to_send() == b"Subject: t\r\n\r\nhi\r\n.\r\n"
    conn.receive_data(b"250 2.0.0 queued as X\r\n")
    assert results(conn) == [
        ("b@example.org", "250 2.0.0 queued as X"),
        ("c@example.org", "550 5.1.1 no"),
    ]
    assert conn.state is c.State.READY


def test_without_pipelining_commands_wait_for_replies():
    conn = ready([])
    conn.send_message(message("b@example.org", "c@example.org"))
    assert conn.data_to_send() == b"MAIL FROM:<a@example.com>\r\n"
    conn.receive_data(b"250 ok\r\n")
    assert conn.data_to_send() == b"RCPT TO:<b@example.org>\r\n"
    conn.receive_data(b"250 ok\r\n")
    assert conn.data_to_send() == b"RCPT TO:<c@example.org>\r\n"
    conn.receive_data(b"250 ok\r\n")
    assert conn.data_to_send() == b"DATA\r\n"
    conn.receive_data(b"354 go\r\n")
    assert conn.data_to_send().endswith(b"\r\n.\r\n")
    conn.receive_data(b"250 done\r\n")
    assert [r for _, r in results(conn)] == ["250 done", "250 done"]


def test_mail_refused_without_pipelining_sends_nothing_more():
    conn = ready([])
    conn.send_message(message("b@example.org"))
    conn.data_to_send()
    conn.receive_data(b"550 5.7.1 sender refused\r\n")
    assert results(conn) == [("b@example.org", "550 5.7.1 sender refused")]
    assert conn.data_to_send() == b""


def test_mail_refused_in_pipeline_gives_every_recipient_the_mail_reply():
    conn = ready(["PIPELINING"])
    conn.send_message(message("b@example.org", "c@example.org"))
    conn.data_to_send()
    conn.receive_data(b"451 4.3.0 later\r\n503 no mail\r\n503 no mail\r\n503 no\r\n")
    assert [r for _, r in results(conn)] == ["451 4.3.0 later", "451 4.3.0 later"]


def test_all_recipients_refused_then_rset_before_next_transaction():
    conn = ready([])
    conn.send_message(message("b@example.org"))
    conn.data_to_send()
    conn.receive_data(b"250 ok\r\n")
    conn.data_to_send()
    conn.receive_data(b"550 no\r\n")
    assert results(conn) == [("b@example.org", "550 no")]
    assert conn.data_to_send() == b""
    conn.send_message(message("d@example.org"))
    assert conn.data_to_send() == b"RSET\r\n"
    conn.receive_data(b"250 reset\r\n")
    assert conn.data_to_send() == b"MAIL FROM:<a@example.com>\r\n"


def test_data_refused_after_accepted_recipients():
    conn = ready(["PIPELINING"])
    conn.send_message(message("b@example.org"))
    conn.data_to_send()
    conn.receive_data(b"250 ok\r\n250 ok\r\n554 5.6.0 no data\r\n")
    assert results(conn) == [("b@example.org", "554 5.6.0 no data")]


@pytest.mark.parametrize(
    "caps, msg, expected",
    [
        # case 23: 8-bit content and 8BITMIME offered -> BODY=8BITMIME
        (
            ["8BITMIME"],
            message("b@x", content=b"S: g\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n"),
            b"MAIL FROM:<a@example.com> BODY=8BITMIME\r\n",
        ),
        (
            ["8BITMIME"],
            message("b@x", body="8BITMIME"),
            b"MAIL FROM:<a@example.com> BODY=8BITMIME\r\n",
        ),
        (["SIZE 1000"], message("b@x"), b"MAIL FROM:<a@example.com> SIZE=18\r\n"),
        # case 22, transaction 2: declared, all ASCII, server lacks SMTPUTF8
        (["8BITMIME"], message("b@x", smtputf8=True), b"MAIL FROM:<a@example.com>\r\n"),
        (
            ["SMTPUTF8"],
            message("b@x", smtputf8=True),
            b"MAIL FROM:<a@example.com> SMTPUTF8\r\n",
        ),
        (
            ["DSN"],
            message("b@x", ret="hdrs", envid="QQ+2B1"),
            b"MAIL FROM:<a@example.com> RET=HDRS ENVID=QQ+2B1\r\n",
        ),
        ([], message("b@x", ret="HDRS", envid="QQ"), b"MAIL FROM:<a@example.com>\r\n"),
        (["DSN"], message("b@x", sender=""), b"MAIL FROM:<>\r\n"),
    ],
)
def test_mail_parameters(caps, msg, expected):
    conn = ready(caps)
    conn.send_message(msg)
    assert conn.data_to_send() == expected


def test_dsn_parameters_per_recipient():
    conn = ready(["PIPELINING", "DSN"])
    rcpts = (
        c.OutboundRecipient("b@x", notify="failure,delay", orcpt="rfc822;b+40x"),
        c.OutboundRecipient("c@x", notify="NEVER"),
        c.OutboundRecipient("d@x"),
    )
    conn.send_message(message(*rcpts))
    assert conn.data_to_send().split(b"\r\n")[1:4] == [
        b"RCPT TO:<b@x> NOTIFY=FAILURE,DELAY ORCPT=rfc822;b+40x",
        b"RCPT TO:<c@x> NOTIFY=NEVER",
        b"RCPT TO:<d@x>",
    ]


@pytest.mark.parametrize(
    "caps, msg, reply",
    [
        ([], message("b@x", content=b"S: g\r\n\r\n\xc3\xbc\r\n"), c.NEEDS_8BITMIME),
        (["8BITMIME"], message("\u03b4@x", smtputf8=True), c.NEEDS_SMTPUTF8),
        (["8BITMIME"], message("b@x", sender="\u03b4@y"), c.NEEDS_SMTPUTF8),
        (
            ["8BITMIME"],
            message("b@x", smtputf8=True, content=b"S: \xce\xb4\r\n\r\nx\r\n"),
            c.NEEDS_SMTPUTF8,
        ),
        (["SIZE 10"], message("b@x"), c.TOO_BIG),
        ([], message("b@x", content=b"a\nb\r\n"), c.BARE_LINE_ENDING),
        ([], message("b@x", sender="a@x>\r\nRCPT TO:<evil@x"), c.BAD_SENDER),
        (["DSN"], message("b@x", envid="a b"), c.BAD_PARAMETER),
        (["DSN"], message("b@x", ret="ALL"), c.BAD_PARAMETER),
    ],
)
def test_local_failures_send_nothing(caps, msg, reply):
    conn = ready(caps)
    conn.send_message(msg)
    assert conn.data_to_send() == b""
    assert {r for _, r in results(conn)} == {str(reply)}
    assert conn.state is c.State.READY


def test_unsafe_recipient_fails_alone():
    conn = ready(["PIPELINING", "DSN"])
    bad = c.OutboundRecipient("x@y>\r\nDATA")
    bad_param = c.OutboundRecipient("z@y", notify="NEVER,SUCCESS")
    conn.send_message(message(bad, "b@x", bad_param))
    sent = conn.data_to_send()
    assert sent.count(b"RCPT TO") == 1 and b"DATA\r\nDATA" not in sent
    conn.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    conn.data_to_send()
    conn.receive_data(b"250 sent\r\n")
    assert results(conn) == [
        ("x@y>\r\nDATA", str(c.BAD_RECIPIENT)),
        ("b@x", "250 sent"),
        ("z@y", str(c.BAD_RECIPIENT)),
    ]


def test_421_mid_transaction_ends_session_with_transient_results():
    conn = ready(["PIPELINING"])
    conn.send_message(message("b@x", "c@x"))
    conn.data_to_send()
    conn.receive_data(b"250 ok\r\n550 no\r\n421 4.3.2 shutting down\r\n")
    found = events(conn)
    assert found == [
        c.TransactionDone(
            (
                c.RecipientResult(c.OutboundRecipient("b@x"), c.Reply(550, ("no",))),
                c.RecipientResult(
                    c.OutboundRecipient("c@x"), c.Reply(421, ("4.3.2 shutting down",))
                ),
            )
        ),
        c.SessionFailed(c.Reply(421, ("4.3.2 shutting down",)), True),
    ]


def test_connection_lost_after_data_defers():
    conn = ready(["PIPELINING"])
    conn.send_message(message("b@x"))
    conn.data_to_send()
    conn.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    conn.receive_data(b"")
    assert results(conn) == [("b@x", str(c.CONNECTION_LOST))]
    assert conn.next_event() is c.CLOSED


def test_quit_then_close():
    conn = ready([])
    conn.quit()
    assert conn.data_to_send() == b"QUIT\r\n"
    conn.receive_data(b"221 bye\r\n")
    assert events(conn) == [] and conn.next_event() is c.CLOSED


def test_refuses_to_write_crlf_in_a_command():
    conn = c.ClientConnection(c.ClientConfig("relay.example\r\nMAIL FROM:<x>"))
    with pytest.raises(ValueError):
        conn.receive_data(b"220 mx\r\n")
