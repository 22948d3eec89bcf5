"""Reading a Postfix configuration: main.cf, lookup tables, master.cf.

The checker needs line numbers, which Postfix's own tools do not give, so the
files are parsed here with Postfix's rules (postconf(5), "Syntax"; the
"Input format" of postmap(1)):

- a logical line starts with a non-blank character; a line that starts with
  whitespace continues it;
- a line whose first non-blank character is `#` is a comment, and only such a
  line: a `#` after a value is part of the value;
- in main.cf the last definition of a parameter wins.

Values are parsed, never evaluated: effective values (defaults, `$name`
expansion) come from Postfix's postconf, see tools.py. This module never
writes a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Logical:
    """One logical line: its text joined from continuations, its first line."""

    text: str
    line: int


def logical_lines(text: str) -> list[Logical]:
    result: list[Logical] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if raw[0] in " \t" and result:
            last = result[-1]
            result[-1] = Logical(f"{last.text} {stripped}", last.line)
        else:
            result.append(Logical(stripped, number))
    return result


@dataclass(frozen=True)
class Param:
    name: str
    value: str
    line: int


def parse_main_cf(text: str) -> dict[str, Param]:
    """Parameters of a main.cf by name, each from its last (winning) line."""
    params: dict[str, Param] = {}
    for logical in logical_lines(text):
        name, sep, value = logical.text.partition("=")
        if sep:
            params[name.strip()] = Param(name.strip(), value.strip(), logical.line)
    return params


@dataclass(frozen=True)
class MapEntry:
    key: str
    value: str
    line: int


def parse_map(text: str) -> list[MapEntry]:
    """Entries of a postmap source file: key, then the rest of the line."""
    entries = []
    for logical in logical_lines(text):
        key, *rest = logical.text.split(None, 1)
        entries.append(MapEntry(key, rest[0] if rest else "", logical.line))
    return entries


def master_services(text: str) -> set[str]:
    """Service names defined in master.cf (first field of each entry)."""
    services = set()
    for logical in logical_lines(text):
        fields = logical.text.split()
        if len(fields) >= 2:
            services.add(fields[0])
    return services


# A table reference in a *_maps setting: `type:name`, possibly `proxy:type:name`.
FILE_MAP_TYPES = {"hash": ".db", "btree": ".db", "lmdb": ".lmdb", "cdb": ".cdb"}
TEXT_MAP_TYPES = {"texthash"}


@dataclass(frozen=True)
class MapRef:
    type: str
    path: str

    def __str__(self) -> str:
        return f"{self.type}:{self.path}"

    @property
    def compiled(self) -> Path | None:
        suffix = FILE_MAP_TYPES.get(self.type)
        return Path(self.path + suffix) if suffix else None


def map_refs(value: str) -> list[MapRef]:
    refs = []
    for item in re.split(r"[\s,]+", value.strip()):
        if not item:
            continue
        while item.startswith("proxy:"):
            item = item[len("proxy:") :]
        kind, sep, name = item.partition(":")
        refs.append(MapRef(kind, name) if sep else MapRef("", kind))
    return refs


@dataclass(frozen=True)
class NextHop:
    """`[host]:port`, `host:port`, `[host]`, `host` as Postfix reads them."""

    host: str
    port: int | None
    bracketed: bool
    # `[host:587]`: Postfix would look up a host literally named `host:587`.
    port_in_brackets: bool = False

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.bracketed else self.host
        return f"{host}:{self.port}" if self.port else host


_BRACKETED = re.compile(r"^\[(?P<inner>[^\]]*)\](?::(?P<port>\d+))?$")
_PLAIN = re.compile(r"^(?P<host>[^:\[\]\s]+)(?::(?P<port>\d+))?$")


def parse_nexthop(text: str) -> NextHop | None:
    """The next hop written in relayhost or after `smtp:`; None if unreadable."""
    text = text.strip()
    match = _BRACKETED.match(text)
    if match:
        inner = match["inner"]
        port = int(match["port"]) if match["port"] else None
        if inner.lower().startswith("ipv6:"):
            return NextHop(inner, port, True)
        host, sep, inner_port = inner.rpartition(":")
        if sep and inner_port.isdigit() and host:
            return NextHop(host, int(inner_port), True, port_in_brackets=True)
        return NextHop(inner, port, True)
    match = _PLAIN.match(text)
    if match:
        port = int(match["port"]) if match["port"] else None
        return NextHop(match["host"], port, False)
    return None
