"""Where mail for a domain goes: a configured route, or MX records.

RFC 5321 5.1: MX records in preference order (ties shuffled), each host's
A then AAAA addresses; with no MX record the domain's own addresses
(implicit MX). RFC 7505: a single MX of preference 0 with exchange "."
(null MX) means the domain takes no mail, and fails at once (5.1.10).
Routes ([delivery] routes, domain -> host:port) override MX, like Postfix's
transport map; a route host is an IP literal or a name resolved by A/AAAA.

Errors become replies for every recipient of the domain: NXDOMAIN fails
(5.4.4, no such domain); a resolver failure or timeout defers (4.4.3);
MX hosts without any address defer (4.4.4).

The resolver is injected (dnspython's async resolver, or any object with
`async resolve(name, rdtype)` raising dnspython's exceptions). This module
never connects to mail servers.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver

from tlsrelay.config import parse_hostport
from tlsrelay.smtp.client import Reply, local_reply

NULL_MX = local_reply(556, "5.1.10 Recipient domain has a null MX (RFC 7505)")
NO_SUCH_DOMAIN = local_reply(550, "5.4.4 Recipient domain not found in DNS")
DNS_FAILED = local_reply(451, "4.4.3 DNS lookup failed; will retry")
NO_ADDRESS = local_reply(451, "4.4.4 No address for any mail server of the domain")
BAD_DOMAIN = local_reply(553, "5.1.2 Recipient address has an unusable domain")


@dataclass(frozen=True)
class Hop:
    """One server to try: its name (for SNI and logs), address and port."""

    host: str
    ip: str
    port: int


@dataclass(frozen=True)
class Destination:
    """Hops in order of preference, or the reply every recipient gets."""

    hops: tuple[Hop, ...] = ()
    error: Reply | None = None
    routed: bool = False


def make_resolver(setting: str) -> dns.asyncresolver.Resolver:
    """[delivery] dns: "system" or "IP:PORT" of one name server."""
    if setting == "system":
        return dns.asyncresolver.Resolver()
    host, port = parse_hostport(setting, 53)
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = port
    resolver.lifetime = 10.0
    return resolver


def ascii_domain(domain: str) -> str | None:
    """The A-label form of DOMAIN for DNS, or None when it has none."""
    try:
        return domain.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None


class Resolver:
    def __init__(
        self,
        dns_resolver: Any,
        routes: dict[str, str],
        smtp_port: int = 25,
        rng: random.Random | None = None,
    ) -> None:
        self.dns = dns_resolver
        self.routes = routes
        self.smtp_port = smtp_port
        self.rng = rng or random.Random()

    async def destination(self, domain: str) -> Destination:
        route = self.routes.get(domain.lower())
        if route is not None:
            host, port = parse_hostport(route, 25)
            dest = await self._hosts([host], port)
            return Destination(dest.hops, dest.error, routed=True)
        name = ascii_domain(domain)
        if not name:
            return Destination(error=BAD_DOMAIN)
        try:
            answer = await self.dns.resolve(name, "MX")
        except dns.resolver.NXDOMAIN:
            return Destination(error=NO_SUCH_DOMAIN)
        except dns.resolver.NoAnswer:
            return await self._hosts([name], self.smtp_port)
        except dns.exception.DNSException:
            return Destination(error=DNS_FAILED)
        records = [(r.preference, r.exchange) for r in answer]
        if any(ex == dns.name.root for _, ex in records):
            # RFC 7505 3: the null MX is the only record; anything else is
            # a broken zone, and no mail is the safe reading of it.
            return Destination(error=NULL_MX)
        self.rng.shuffle(records)
        records.sort(key=lambda r: r[0])
        hosts = [ex.to_text(omit_final_dot=True) for _, ex in records]
        return await self._hosts(hosts, self.smtp_port)

    async def _hosts(self, hosts: list[str], port: int) -> Destination:
        hops: list[Hop] = []
        temporary = False
        for host in hosts:
            try:
                ipaddress.ip_address(host)
                hops.append(Hop(host, host, port))
                continue
            except ValueError:
                pass
            addresses, failed = await self._addresses(host)
            temporary = temporary or failed
            hops += [Hop(host, ip, port) for ip in addresses]
        if hops:
            return Destination(tuple(hops))
        return Destination(error=DNS_FAILED if temporary else NO_ADDRESS)

    async def _addresses(self, host: str) -> tuple[list[str], bool]:
        found: list[str] = []
        failed = False
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self.dns.resolve(host, rdtype)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException:
                failed = True
                continue
            found += [r.to_text() for r in answer]
        return found, failed
