"""kill -9 of `serve` under load loses nothing that was answered 250.

Issue 2, "Crash": a few client threads send small and medium messages over
STARTTLS sessions while the test kills the supervisor with SIGKILL once a
randomly chosen number of messages has been accepted, so the kill lands
while other sessions are mid-command or mid-DATA. Its children (listener
workers, delivery, control) must die with it (PR_SET_PDEATHSIG), checked by
pid. The node is started again on the same spool; after the last round
every Message-ID the client saw answered `250` must reach the sink.
Duplicates are allowed, losses are not.

Bounded: at most MESSAGES_PER_ROUND messages per round, ROUNDS rounds, and
each client thread stops at its first error.
"""

from __future__ import annotations

import random
import smtplib
import ssl
import threading

import pytest

from support.postfix import pid_alive, wait_until

pytestmark = pytest.mark.interop

CLIENT_IP = "127.0.0.4"
ROUNDS = 2
THREADS = 4
MESSAGES_PER_ROUND = 200
SEED = 20260


class Load:
    """Client threads sending until told to stop, the cap, or an error."""

    def __init__(self, relay, round_no: int, rng: random.Random):
        self.relay = relay
        self.round_no = round_no
        self.sizes = [rng.choice([200, 2_000, 60_000, 300_000]) for _ in range(512)]
        self.accepted: dict[str, str] = {}  # Message-ID -> text of the 250 reply
        self.lock = threading.Lock()
        self.sent = 0
        self.errors: list[str] = []
        self.threads = [
            threading.Thread(target=self._client, args=(t,), daemon=True)
            for t in range(THREADS)
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        for t in self.threads:
            t.join(30)
            assert not t.is_alive(), "client thread did not stop"

    def _next(self) -> int | None:
        with self.lock:
            if self.sent >= MESSAGES_PER_ROUND:
                return None
            self.sent += 1
            return self.sent

    def _client(self, thread_no: int) -> None:
        context = ssl.create_default_context(cafile=str(self.relay.ca_file))
        try:
            with smtplib.SMTP(
                "127.0.0.1", self.relay.port, timeout=15, source_address=(CLIENT_IP, 0)
            ) as smtp:
                smtp.starttls(context=context)
                smtp.ehlo("crash.test")
                while (n := self._next()) is not None:
                    self._send(smtp, thread_no, n)
        except (OSError, smtplib.SMTPException) as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _send(self, smtp: smtplib.SMTP, thread_no: int, n: int) -> None:
        mid = f"<r{self.round_no}-t{thread_no}-n{n}@crash.test>"
        body = ("x" * 76 + "\r\n") * (self.sizes[n % len(self.sizes)] // 78)
        data = f"Message-ID: {mid}\r\nSubject: crash {n}\r\n\r\n{body}".encode()
        smtp.mail("load@crash.test")
        smtp.rcpt(f"n{n}@dest.example")
        code, reply = smtp.data(data)
        if code == 250:
            with self.lock:
                self.accepted[mid] = reply.decode(errors="replace")
        else:
            raise smtplib.SMTPDataError(code, reply)


def delivered_ids(sink) -> set[str]:
    return {m.message()["Message-ID"] for m in sink.messages()}


def test_kill_9_under_load_loses_nothing(relay_factory, sink):
    relay = relay_factory(allow=[f"{CLIENT_IP}/32"])
    rng = random.Random(SEED)
    accepted: dict[str, str] = {}

    for round_no in range(ROUNDS):
        children = relay.children()
        assert len(children) >= 2, "serve started no worker or delivery process"
        load = Load(relay, round_no, rng)
        kill_after = rng.randint(40, MESSAGES_PER_ROUND - 40)
        load.start()
        wait_until(
            lambda load=load, k=kill_after: (
                len(load.accepted) >= k or not any(t.is_alive() for t in load.threads)
            ),
            60,
            f"{kill_after} accepted messages (round {round_no})",
        )
        assert len(load.accepted) >= kill_after, load.errors

        relay.kill9()
        wait_until(
            lambda c=children: not any(pid_alive(p) for p in c),
            10,
            f"children {children} of the killed serve to die",
        )
        load.join()
        accepted.update(load.accepted)
        relay.start()

    assert all(reply.startswith("2.0.0") for reply in accepted.values())
    try:
        wait_until(
            lambda: not (set(accepted) - delivered_ids(sink)),
            60,
            "every message answered 250 to reach the sink",
        )
    except AssertionError:
        lost = sorted(set(accepted) - delivered_ids(sink))
        pytest.fail(
            f"{len(lost)} of {len(accepted)} accepted messages lost: {lost[:5]}"
        )
