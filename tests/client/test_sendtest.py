"""Following a test message through Postfix's log (sendtest.LogFollower)."""

from __future__ import annotations

from tlsrelay.client.sendtest import LogFollower, SendResult

MID = "<tlsrelay-test.ab12@mail.example.com>"
PREFIX = "Dec  4 10:00:00 mail postfix"


def follow(tmp_path, *lines: str) -> SendResult:
    log = tmp_path / "maillog"
    log.write_text("old line: 4A1: status=sent (250 2.0.0 Ok: queued as OLD)\n")
    offset = log.stat().st_size
    log.write_text(log.read_text() + "".join(f"{PREFIX}{line}\n" for line in lines))
    result = SendResult(MID)
    LogFollower(log, offset, MID).advance(result)
    return result


def test_accepted_by_the_relay_with_its_queue_id(tmp_path):
    result = follow(
        tmp_path,
        f"/cleanup[7]: 4B2C: message-id={MID}",
        "/qmgr[8]: 4B2C: from=<a@mail.example.com>, size=300, nrcpt=1 (queue active)",
        "/smtp[9]: Verified TLS connection established to lon-tls.relay.example"
        "[192.0.2.25]:587: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
        "/smtp[9]: 4B2C: to=<b@example.org>, relay=lon-tls.relay.example"
        "[192.0.2.25]:587, delay=0.2, delays=0/0/0.1/0.1, dsn=2.0.0, status=sent "
        "(250 2.0.0 Ok: queued as 7F3A9C)",
    )
    assert result.ok and result.queue_id == "4B2C"
    assert result.relay_queue_id == "7F3A9C"
    assert [h.step for h in result.hops] == ["queued", "connected", "tls", "accepted"]
    assert result.hops[1].detail == "relay=lon-tls.relay.example[192.0.2.25]:587"
    assert result.hops[2].detail.startswith("Verified TLS connection established")


def test_case20_deferral_when_tls_is_not_offered(tmp_path):
    reason = (
        "TLS is required, but was not offered by host relay.example.net[192.0.2.25]"
    )
    result = follow(
        tmp_path,
        f"/cleanup[7]: 5C3D: message-id={MID}",
        "/smtp[9]: 5C3D: to=<b@example.org>, relay=relay.example.net[192.0.2.25]:587"
        f", delay=1, delays=0/0/1/0, dsn=4.7.4, status=deferred ({reason})",
    )
    assert not result.ok and result.status == "deferred"
    assert result.hops[-1].step == "deferred" and result.hops[-1].detail == reason


def test_other_messages_are_ignored(tmp_path):
    result = follow(
        tmp_path,
        "/cleanup[7]: 9999: message-id=<someone-else@example>",
        "/smtp[9]: 9999: to=<b@example.org>, relay=x[192.0.2.1]:587, dsn=2.0.0, "
        "status=sent (250 2.0.0 Ok: queued as NOPE)",
    )
    assert result.status == "timeout" and result.hops == []
