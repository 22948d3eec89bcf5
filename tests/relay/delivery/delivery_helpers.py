"""Helpers for delivery tests: a spool wired to a scheduler that resolves with
the loopback DNS server, a fake clock, and DSN parsing."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from support.dns import DnsServer
from tlsrelay import config
from tlsrelay.relay import spool as spool_mod
from tlsrelay.relay.delivery import policy
from tlsrelay.relay.delivery.resolve import Resolver, make_resolver
from tlsrelay.relay.delivery.scheduler import Scheduler

CONTENT = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: t\r\n\r\nHello\r\n"


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    """One node's spool plus a scheduler wired to the test DNS and MX port."""

    tmp: Path
    dns: DnsServer
    clock: Clock = field(default_factory=Clock)
    delivery: dict = field(default_factory=dict)
    smtp_port: int = 25
    tls_policy: Callable = policy.tls_level_for

    def __post_init__(self) -> None:
        self.settings = self.make_settings()
        self.spool = spool_mod.Spool(self.settings.spool.path).create()

    def make_settings(self) -> config.Settings:
        delivery = {
            "dns": self.dns.nameserver,
            "connect_timeout_s": 5,
            "command_timeout_s": 10,
            "smtp_port": self.smtp_port,
        }
        delivery.update(self.delivery)
        raw = {
            "node": {"hostname": "relay.example.net", "location": "LON"},
            "delivery": delivery,
        }
        return config.from_dict(raw, self.tmp / "tlsrelay.toml")

    def scheduler(self) -> Scheduler:
        self.settings = self.make_settings()
        d = self.settings.delivery
        resolver = Resolver(make_resolver(d.dns), d.routes, d.smtp_port)
        return Scheduler(
            self.settings, self.spool, resolver, self.clock, tls_policy=self.tls_policy
        )

    def rounds(self, count: int = 1) -> None:
        """Run COUNT scheduler rounds, each waiting for every attempt."""

        async def go() -> None:
            scheduler = self.scheduler()
            for _ in range(count):
                await scheduler.run_once()

        asyncio.run(go())

    def queue(
        self,
        *rcpts: str | spool_mod.Recipient,
        sender: str = "a@example.com",
        content: bytes = CONTENT,
        **envelope,
    ) -> str:
        recipients = [
            r if isinstance(r, spool_mod.Recipient) else spool_mod.Recipient(r)
            for r in rcpts
        ]
        env = spool_mod.Envelope(sender, recipients, **envelope)
        if not env.arrived:
            env.arrived = self.clock.now
        writer = self.spool.writer(env)
        writer.write(content)
        return writer.commit()

    def entries(self) -> list[spool_mod.Entry]:
        return list(self.spool.entries())

    def dsns(self) -> list[tuple[spool_mod.Entry, email.message.Message]]:
        found = []
        for entry in self.entries():
            if entry.envelope.origin == "dsn":
                content = self.spool.read_content(entry.queue_id)
                found.append(
                    (entry, email.message_from_bytes(content, policy=email.policy.SMTP))
                )
        return found


def delivery_status(message: email.message.Message) -> list[dict[str, str]]:
    """The message/delivery-status part as field groups: [per-message, rcpt...]."""
    assert message.get_content_type() == "multipart/report"
    for part in message.walk():
        if part.get_content_type() in (
            "message/delivery-status",
            "message/global-delivery-status",
        ):
            groups = []
            for block in part.get_payload():
                groups.append({k.lower(): str(v) for k, v in block.items()})
                rest = block.get_payload()
                # email reads RFC 6533's global form as one message whose
                # body holds the recipient blocks.
                if isinstance(rest, str) and rest.strip():
                    for text in rest.replace("\r\n", "\n").split("\n\n"):
                        if text.strip():
                            fields = email.message_from_string(text.strip() + "\n")
                            groups.append({k.lower(): v for k, v in fields.items()})
            return groups
    raise AssertionError("no delivery-status part")
