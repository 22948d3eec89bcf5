"""Routes and MX lookups against the loopback DNS server."""

from __future__ import annotations

import asyncio

import pytest

from tlsrelay.relay.delivery import resolve
from tlsrelay.relay.delivery.resolve import Hop


def destination(dns_server, domain, routes=None):
    async def go():
        dns = resolve.make_resolver(dns_server.nameserver)
        return await resolve.Resolver(dns, routes or {}, 2525).destination(domain)

    return asyncio.run(go())


def test_mx_hosts_in_preference_order_with_all_addresses(dns_server):
    dns_server.add("example.org", "MX", "20 b.example.org.", "10 a.example.org.")
    dns_server.add("a.example.org", "A", "127.0.0.10")
    dns_server.add("a.example.org", "AAAA", "::1")
    dns_server.add("b.example.org", "A", "127.0.0.20")
    assert destination(dns_server, "example.org").hops == (
        Hop("a.example.org", "127.0.0.10", 2525),
        Hop("a.example.org", "::1", 2525),
        Hop("b.example.org", "127.0.0.20", 2525),
    )


@pytest.mark.parametrize(
    "setup, error",
    [
        (lambda d: d.add("example.org", "MX", "0 ."), resolve.NULL_MX),
        (lambda d: d.add("other.example", "A", "127.0.0.1"), resolve.NO_SUCH_DOMAIN),
        (lambda d: d.servfail("example.org"), resolve.DNS_FAILED),
        (
            lambda d: d.add("example.org", "MX", "10 gone.example."),
            resolve.NO_ADDRESS,
        ),
        (lambda d: d.add("example.org", "TXT", '"no mail here"'), resolve.NO_ADDRESS),
    ],
)
def test_errors_become_replies(dns_server, setup, error):
    setup(dns_server)
    result = destination(dns_server, "example.org")
    assert result.error == error and result.hops == ()


def test_route_overrides_mx_and_takes_its_port(dns_server):
    dns_server.add("example.org", "MX", "10 mx.example.org.")
    dns_server.add("hub.example", "A", "127.0.0.7")
    routes = {"example.org": "hub.example:2626", "example.net": "[::1]:26"}
    assert destination(dns_server, "Example.ORG", routes).hops == (
        Hop("hub.example", "127.0.0.7", 2626),
    )
    assert destination(dns_server, "example.net", routes).hops == (
        Hop("::1", "::1", 26),
    )
    assert ("example.org.", "MX") not in dns_server.queries


def test_internationalised_domain_is_looked_up_as_a_label(dns_server):
    dns_server.add("xn--bcher-kva.example", "A", "127.0.0.9")
    assert destination(dns_server, "b\u00fccher.example").hops == (
        Hop("xn--bcher-kva.example", "127.0.0.9", 2525),
    )
