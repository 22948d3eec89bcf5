"""PROXY protocol v1 and v2 headers (HAProxy's spec), as a table."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from tlsrelay.relay.proxyproto import (
    V2_SIGNATURE,
    ProxiedPeer,
    ProxyError,
    looks_like_header,
    parse,
)


def v2(command: int, family: int, addresses: bytes, tlvs: bytes = b"") -> bytes:
    body = addresses + tlvs
    return V2_SIGNATURE + struct.pack("!BBH", 0x20 | command, family, len(body)) + body


V4 = (
    ipaddress.ip_address("198.51.100.10").packed
    + ipaddress.ip_address("192.0.2.25").packed
    + struct.pack("!HH", 56324, 587)
)
V6 = (
    ipaddress.ip_address("2001:db8::5").packed
    + ipaddress.ip_address("2001:db8::1").packed
    + struct.pack("!HH", 40000, 465)
)


@pytest.mark.parametrize(
    "data, peer, used",
    [
        (
            b"PROXY TCP4 198.51.100.10 192.0.2.25 56324 587\r\nEHLO",
            ProxiedPeer("198.51.100.10", 56324),
            47,
        ),
        (
            b"PROXY TCP6 2001:db8::5 2001:db8::1 40000 465\r\n",
            ProxiedPeer("2001:db8::5", 40000),
            46,
        ),
        (b"PROXY UNKNOWN\r\n", None, 15),
        (b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\nX", None, 39),
        (v2(1, 0x11, V4), ProxiedPeer("198.51.100.10", 56324), 28),
        (
            v2(1, 0x11, V4, b"\x04\x00\x01x") + b"rest",
            ProxiedPeer("198.51.100.10", 56324),
            32,
        ),
        (v2(1, 0x21, V6), ProxiedPeer("2001:db8::5", 40000), 52),
        (v2(0, 0x00, b""), None, 16),
    ],
)
def test_valid_headers(data, peer, used):
    assert parse(data) == (peer, used)


@pytest.mark.parametrize(
    "data",
    [
        b"PROXY TCP4 198.51.100.10 192.0.2.25 56324",
        b"PROX",
        v2(1, 0x11, V4)[:20],
        V2_SIGNATURE[:5],
    ],
)
def test_incomplete_headers_need_more(data):
    assert parse(data) is None


@pytest.mark.parametrize(
    "data",
    [
        b"EHLO client.example\r\n",
        b"PROXY TCP4 not-an-ip 192.0.2.25 1 2\r\n",
        b"PROXY TCP4 2001:db8::5 192.0.2.25 1 2\r\n",
        b"PROXY TCP4 198.51.100.10 192.0.2.25 1\r\n",
        b"PROXY TCP4 198.51.100.10 192.0.2.25 70000 2\r\n",
        b"PROXY " + b"A" * 120,
        b"PROXZ TCP4",
        v2(1, 0x11, V4[:6]),
        V2_SIGNATURE[:6] + b"XXXXXX" + b"\x21\x11\x00\x00",
        v2(5, 0x11, V4),
    ],
)
def test_malformed_headers_are_errors(data):
    with pytest.raises(ProxyError):
        parse(data)


def test_looks_like_header():
    assert looks_like_header(b"PROXY TCP4")
    assert looks_like_header(V2_SIGNATURE)
    assert not looks_like_header(b"EHLO x")
    assert not looks_like_header(b"")
    assert not looks_like_header(b"\x16\x03\x01\x02\x00")  # a TLS ClientHello
