"""Case 24 rate guard: more than N DSNs a minute to one address are held in
the queue with a WARNING, never dropped; an injected clock drives it. Also
delay DSNs, which the guard counts like any other."""

from __future__ import annotations

import asyncio
import logging

from delivery_helpers import delivery_status

from tlsrelay.relay import spool as spool_mod
from tlsrelay.relay.delivery.guard import DsnRateGuard
from tlsrelay.relay.delivery.scheduler import HELD_BY_GUARD

DSN = b"From: MAILER-DAEMON@relay.example.net\r\nSubject: Undelivered\r\n\r\nx\r\n"


def test_guard_window_slides_and_alerts_once_per_window():
    guard = DsnRateGuard(per_minute=2)
    assert guard.admit("A@example.com", 0.0) is None
    assert guard.admit("a@example.com", 10.0) is None
    assert guard.admit("a@example.com", 20.0) == 60.0  # case-insensitive
    assert guard.admit("other@example.com", 20.0) is None
    assert guard.alert_due("a@example.com", 20.0)
    assert not guard.alert_due("a@example.com", 50.0)
    assert guard.admit("a@example.com", 60.0) is None  # the first one left
    assert guard.admit("a@example.com", 61.0) == 70.0
    assert guard.alert_due("a@example.com", 81.0)
    guard.prune(200.0)
    assert guard._sent == {} and guard._alerted_until == {}


def test_no_limit_when_zero():
    guard = DsnRateGuard(per_minute=0)
    assert all(guard.admit("a@example.com", 0.0) is None for _ in range(100))


def queue_dsns(world, count: int, to: str = "a@example.com") -> list[str]:
    return [world.queue(to, sender="", content=DSN, origin="dsn") for _ in range(count)]


def test_dsns_over_the_rate_are_held_then_sent(world, make_mx, caplog):
    mx = make_mx()
    world.delivery.update(
        dsn_rate_per_minute=2, routes={"example.com": mx.address, "x.org": mx.address}
    )
    scheduler = world.scheduler()
    held = queue_dsns(world, 4)
    other = queue_dsns(world, 1, to="b@x.org")
    start = world.clock.now

    with caplog.at_level(logging.INFO):
        asyncio.run(scheduler.run_once())
    assert sorted(m.rcpts[0][0] for m in mx.messages) == [
        "a@example.com",
        "a@example.com",
        "b@x.org",
    ]
    left = {e.queue_id: e.state for e in world.entries()}
    assert len(left) == 2 and set(left) <= set(held) and other[0] not in left
    for state in left.values():
        assert state.next_attempt == start + 60 and state.attempts == 0
        assert state.last_error == HELD_BY_GUARD
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "<a@example.com>" in warnings[0].getMessage()
    mail = [r.getMessage() for r in caplog.records if r.name == "tlsrelay.mail"]
    assert any("dsn=4.7.1 status=deferred" in line for line in mail)

    async def later_rounds() -> None:
        world.clock.now = start + 59
        await scheduler.run_once()
        assert len(mx.messages) == 3  # window still full: nothing more
        world.clock.now = start + 60
        await scheduler.run_once()

    asyncio.run(later_rounds())
    assert len(mx.messages) == 5 and world.entries() == []


def test_ordinary_mail_is_not_limited(world, make_mx):
    mx = make_mx()
    world.delivery.update(dsn_rate_per_minute=1, routes={"example.org": mx.address})
    for _ in range(3):
        world.queue("b@example.org")
    world.rounds()
    assert len(mx.messages) == 3 and world.entries() == []


# -- delay DSNs (NOTIFY=DELAY, off by default) ---------------------------------


def deferred_world(world, make_mx, **delivery):
    mx = make_mx(rcpt={"b@example.org": "451 4.3.0 Try later"})
    world.delivery.update(routes={"example.org": mx.address}, **delivery)
    return mx


def test_delay_dsn_is_off_by_default(world, make_mx):
    deferred_world(world, make_mx)
    world.queue("b@example.org")
    world.clock.now += 5 * 3600
    world.rounds()
    assert world.dsns() == []


def test_delay_dsn_once_after_the_warning_time(world, make_mx, caplog):
    deferred_world(world, make_mx, delay_warning_s=4 * 3600)
    qid = world.queue("b@example.org", content=b"Subject: s\r\n\r\nbody\r\n")
    world.rounds()
    assert world.dsns() == []  # deferred, but not long enough

    world.clock.now += 4 * 3600
    world.rounds()
    [(entry, dsn)] = world.dsns()
    assert dsn["Subject"] == "Delayed Mail (still being retried)"
    rcpt = delivery_status(dsn)[1]
    assert rcpt["action"] == "delayed" and rcpt["status"] == "4.3.0"
    types = [p.get_content_type() for p in dsn.walk()]
    assert "text/rfc822-headers" in types and b"body" not in dsn.as_bytes()
    assert world.spool.entry(qid).state.recipients[0].delay_dsn_sent

    world.clock.now += 3600
    with caplog.at_level(logging.INFO, logger="tlsrelay.mail"):
        world.rounds()  # the first report goes (and fails: no DNS for it)
    assert f"{qid}: to=<b@example.org>" in caplog.text  # tried again
    assert "delay notification" not in caplog.text  # never a second report


def test_notify_without_delay_gets_no_delay_dsn(world, make_mx):
    deferred_world(world, make_mx, delay_warning_s=60)
    world.queue(spool_mod.Recipient("b@example.org", notify="FAILURE"))
    world.clock.now += 120
    world.rounds()
    assert world.dsns() == []


def test_bounce_gets_no_delay_dsn(world, make_mx):
    deferred_world(world, make_mx, delay_warning_s=60)
    world.queue("b@example.org", sender="")
    world.clock.now += 120
    world.rounds()
    assert world.dsns() == []
