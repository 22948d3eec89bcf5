"""Faults found by QA (H9) in the server core, each pinned by a test.

- Over-limit recipients: a client that pipelines more RCPTs than
  ``max_recipients`` gets 452 4.5.3 for the rest (RFC 5321 4.5.3.1.10) and
  sends them in a later transaction.  Those 452s used to count as errors,
  so 20 of them closed the session with 421 and lost the transaction whose
  first recipients had been accepted.  Postfix does not count them until
  its overshoot limit (1000 by default) is passed.
"""

from __future__ import annotations

from test_server_driver import codes, ready

from tlsrelay.smtp import replies

MAIL = b"MAIL FROM:<a@example.com>\r\n"


def rcpts(count: int) -> bytes:
    return b"".join(b"RCPT TO:<r%d@example.org>\r\n" % i for i in range(count))


def test_over_limit_recipients_do_not_close_the_session():
    peer = ready(max_recipients=5, max_errors=3)
    got = peer.send(MAIL + rcpts(10) + b"DATA\r\n")
    assert codes(got) == ["250 2.1.0"] + ["250 2.1.5"] * 5 + ["452 4.5.3"] * 5 + [
        "354 End"
    ]
    got = peer.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    assert codes(got) == ["250 2.0.0"]
    [message] = peer.queued
    assert len(message.envelope.recipients) == 5
    assert not peer.closed


def test_overshoot_beyond_the_limit_again_counts_as_errors():
    # max_recipients accepted, max_recipients more refused for free, then
    # each further 452 is an error: the session cannot loop on RCPT forever.
    peer = ready(max_recipients=2, max_errors=3)
    got = peer.send(MAIL + rcpts(2 + 2 + 3))
    assert codes(got)[-1] == "421 4.7.0"
    assert got[-2] == str(replies.TOO_MANY_RECIPIENTS)
    assert peer.closed


def test_overshoot_is_counted_per_transaction():
    peer = ready(max_recipients=1, max_errors=2)
    for _ in range(3):
        got = peer.send(MAIL + rcpts(2) + b"RSET\r\n")
        assert codes(got) == ["250 2.1.0", "250 2.1.5", "452 4.5.3", "250 2.0.0"]
    assert not peer.closed
