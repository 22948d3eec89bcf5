"""DNS for the checker: the relay's addresses and the MX of a bare relayhost.

The resolver is made from one option: "system" (resolv.conf) or IP[:PORT] of
a name server, which is how tests point it at a loopback server. Absent
records (NXDOMAIN, no answer) are an empty list; a server that does not
answer is LookupFailed, so a broken resolver never reads as "no MX".

It only queries; it never trusts an answer for anything but this report.
"""

from __future__ import annotations

import ipaddress

import dns.exception
import dns.resolver

from tlsrelay.client.rules import LookupFailed
from tlsrelay.config import parse_hostport

LIFETIME_S = 5.0


def make_resolver(nameserver: str = "system") -> dns.resolver.Resolver:
    if nameserver == "system":
        resolver = dns.resolver.Resolver()
    else:
        host, port = parse_hostport(nameserver, 53)
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
    resolver.lifetime = LIFETIME_S
    return resolver


def _query(resolver: dns.resolver.Resolver, name: str, rdtype: str):
    try:
        return list(resolver.resolve(name, rdtype, search=False))
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        raise LookupFailed(f"{rdtype} {name}: {exc}") from exc


def mx_hosts(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    """Exchanges of NAME by preference, lower-case, without the final dot."""
    records = sorted(_query(resolver, name, "MX"), key=lambda r: r.preference)
    return [r.exchange.to_text(omit_final_dot=True).lower() for r in records]


def addresses(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    """IPv4 then IPv6 addresses of NAME; an IP literal is its own answer."""
    try:
        return [str(ipaddress.ip_address(name))]
    except ValueError:
        pass
    found = [r.address for r in _query(resolver, name, "A")]
    return found + [r.address for r in _query(resolver, name, "AAAA")]
