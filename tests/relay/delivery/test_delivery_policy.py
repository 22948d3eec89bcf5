"""Pure delivery decisions, table by table."""

from __future__ import annotations

import pytest

from tlsrelay.relay import spool
from tlsrelay.relay.delivery import policy
from tlsrelay.smtp.client import Reply, TlsLevel


@pytest.mark.parametrize(
    "attempts, delay_s",
    [
        (0, 0),
        (1, 300),
        (2, 600),
        (3, 1200),
        (4, 2400),
        (5, 4000),
        (6, 4000),
        (1000, 4000),
    ],
)
def test_backoff_doubles_up_to_the_maximum(attempts, delay_s):
    assert policy.backoff_s(attempts, 300.0, 4000.0) == delay_s


@pytest.mark.parametrize(
    "code, status",
    [
        (250, spool.DELIVERED),
        (251, spool.DELIVERED),
        (354, spool.DEFERRED),
        (421, spool.DEFERRED),
        (450, spool.DEFERRED),
        (550, spool.FAILED),
        (556, spool.FAILED),
    ],
)
def test_status_of_reply(code, status):
    assert policy.status_of(Reply(code, ("x",))) == status


@pytest.mark.parametrize(
    "notify, status, wanted",
    [
        (None, spool.FAILED, True),
        ("FAILURE", spool.FAILED, True),
        ("SUCCESS,FAILURE", spool.FAILED, True),
        ("NEVER", spool.FAILED, False),
        ("DELAY", spool.FAILED, False),
        ("success", spool.FAILED, False),
        (None, spool.DEFERRED, False),
        (None, spool.DELIVERED, False),
    ],
)
def test_dsn_wanted(notify, status, wanted):
    assert policy.dsn_wanted(notify, status) is wanted


@pytest.mark.parametrize(
    "sender, origin, allowed",
    [
        ("a@example.com", "smtp", True),
        ("", "smtp", False),
        ("postmaster@relay", "dsn", False),
        ("postmaster@relay", "notice", False),
    ],
)
def test_bounces_never_bounce(sender, origin, allowed):
    envelope = spool.Envelope(sender, [spool.Recipient("b@x")], origin=origin)
    assert policy.bounces_allowed(envelope) is allowed


@pytest.mark.parametrize(
    "arrived, now, expired",
    [(0.0, 431999.0, False), (0.0, 432000.0, True), (100.0, 50.0, False)],
)
def test_expired(arrived, now, expired):
    assert policy.expired(arrived, now, 432000.0) is expired


@pytest.mark.parametrize("routed", [True, False])
def test_tls_level_is_opportunistic_for_now(routed):
    decision = policy.tls_level_for("example.org", routed)
    assert decision.level is TlsLevel.MAY and decision.reason
