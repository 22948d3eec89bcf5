"""The PROXY protocol header (HAProxy's spec, versions 1 and 2), sans-IO.

A TCP proxy or load balancer in front of the relay hides the client's
address; the relay's filtering list must judge the real client (see case 12:
allowlists defeated by a NAT or proxy address). A proxy configured in
[listen] proxy_from sends one header before anything else, naming the
client. `parse` reads it from the start of a buffer.

Version 1 is a text line, at most 107 octets:
    PROXY TCP4 198.51.100.10 192.0.2.25 56324 587\\r\\n
Version 2 is binary: a 12-octet signature, version/command, family, length,
then the addresses and optional TLVs (ignored here).

"UNKNOWN" (v1) and the LOCAL command (v2, health checks) carry no client:
`parse` returns None for them, and the connection's own peer counts.

This module never trusts a header by itself: the listener calls it only for
peers inside proxy_from, and treats a header from anyone else as a protocol
error.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX = 107  # octets, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER = struct.Struct("!12sBBH")
V2_CMD_LOCAL = 0x0
V2_CMD_PROXY = 0x1
# Address family and transport -> (address length, port struct)
V2_TCP = {0x11: 4, 0x21: 16}


class ProxyError(Exception):
    """The header is malformed or missing."""


@dataclass(frozen=True)
class ProxiedPeer:
    ip: str
    port: int


def looks_like_header(data: bytes) -> bool:
    """True when DATA starts (or could start) a PROXY header of either version."""
    if not data:
        return False
    return any(
        data[: len(sig)] == sig[: len(data)] for sig in (V1_PREFIX, V2_SIGNATURE)
    )


def parse(data: bytes) -> tuple[ProxiedPeer | None, int] | None:
    """(peer or None for UNKNOWN/LOCAL, octets consumed), or None: need more.

    Raises ProxyError when DATA cannot be the start of a valid header.
    """
    if data[:1] == V2_SIGNATURE[:1]:
        return _parse_v2(data)
    if data[:1] == V1_PREFIX[:1]:
        return _parse_v1(data)
    raise ProxyError("no PROXY header")


def _parse_v1(data: bytes) -> tuple[ProxiedPeer | None, int] | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX or not V1_PREFIX.startswith(data[:6]):
            raise ProxyError("PROXY v1 line malformed or too long")
        return None
    words = data[:end].split(b" ")
    if words[0] != b"PROXY" or len(words) < 2:
        raise ProxyError("PROXY v1 line malformed")
    if words[1] == b"UNKNOWN":
        return None, end + 2
    if words[1] not in (b"TCP4", b"TCP6") or len(words) != 6:
        raise ProxyError("PROXY v1 line malformed")
    try:
        source = ipaddress.ip_address(words[2].decode("ascii"))
        ipaddress.ip_address(words[3].decode("ascii"))
        port = int(words[4])
    except (ValueError, UnicodeDecodeError):
        raise ProxyError("PROXY v1 address malformed") from None
    if source.version != (4 if words[1] == b"TCP4" else 6) or not 0 <= port < 65536:
        raise ProxyError("PROXY v1 address malformed")
    return ProxiedPeer(str(source), port), end + 2


def _parse_v2(data: bytes) -> tuple[ProxiedPeer | None, int] | None:
    if len(data) < V2_HEADER.size:
        if not V2_SIGNATURE.startswith(data[:12]):
            raise ProxyError("PROXY v2 signature malformed")
        return None
    signature, ver_cmd, family, length = V2_HEADER.unpack_from(data)
    if signature != V2_SIGNATURE or ver_cmd >> 4 != 2:
        raise ProxyError("PROXY v2 signature or version malformed")
    total = V2_HEADER.size + length
    if len(data) < total:
        return None
    command = ver_cmd & 0xF
    if command == V2_CMD_LOCAL:
        return None, total
    if command != V2_CMD_PROXY:
        raise ProxyError("PROXY v2 command unknown")
    size = V2_TCP.get(family)
    if size is None:
        # UDP or UNIX sockets: no TCP client to judge, use the real peer.
        return None, total
    if length < 2 * size + 4:
        raise ProxyError("PROXY v2 address block too short")
    body = data[V2_HEADER.size : total]
    source = ipaddress.ip_address(body[:size])
    (port,) = struct.unpack_from("!H", body, 2 * size)
    return ProxiedPeer(str(source), port), total
