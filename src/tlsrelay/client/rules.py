"""The checks of a customer's Postfix settings, as pure functions.

Input is a ConfigView (parsed files with line numbers, effective values from
postconf, file times) and the expected relay; output is a list of Findings.
The MX lookup for a relayhost written without brackets is passed in, so the
same rules run offline (no lookup: a warning) and online.

Postfix behaviour the rules rest on:
- relayhost and a transport next hop without `[]` are mail domains: Postfix
  looks up their MX records and delivers to those hosts (postconf(5),
  relayhost);
- a transport map value is `transport:nexthop`; without the transport field
  the text before the first `:` is taken as a master.cf service name
  (transport(5), RESULT FORMAT);
- the relay takes customers on 587 with STARTTLS or 465 with implicit TLS
  (`smtp_tls_wrappermode = yes`), never on 25;
- TLS levels `none` and `may` allow plaintext, so a relay that loses TLS (or
  a man in the middle stripping STARTTLS) would get the mail in clear.

Nothing here reads files or the network, and nothing ever edits the
customer's files: fixes are printed for the customer to apply.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from tlsrelay.client import findings as F
from tlsrelay.client.findings import Finding
from tlsrelay.client.postfixconf import (
    TEXT_MAP_TYPES,
    MapEntry,
    MapRef,
    NextHop,
    Param,
    parse_map,
    parse_nexthop,
)

SUBMISSION_PORT = 587
SMTPS_PORT = 465
_LOCATION_HOST = re.compile(r"^(?P<loc>[a-z]{2,5})-tls\.(?P<domain>.+)$")

# Lines that start with one of these are shell commands pasted into a map.
SHELL_WORDS = {
    "postmap",
    "postfix",
    "postconf",
    "postalias",
    "newaliases",
    "makemap",
    "sudo",
    "systemctl",
    "service",
    "echo",
    "cat",
    "vi",
    "vim",
    "nano",
    "cp",
    "mv",
    "chmod",
    "chown",
    "cd",
    "sh",
    "bash",
    "tlsrelay",
}

MxLookup = Callable[[str], list[str]]


class LookupFailed(Exception):
    """DNS gave no answer (timeout, SERVFAIL); the text says which."""


@dataclass(frozen=True)
class Relay:
    """The relay this server should use: host, port and its location."""

    host: str
    port: int = SUBMISSION_PORT

    @property
    def location(self) -> str:
        match = _LOCATION_HOST.match(self.host.lower())
        return match["loc"].upper() if match else ""

    @property
    def domain(self) -> str:
        match = _LOCATION_HOST.match(self.host.lower())
        return match["domain"] if match else ""

    def nexthop(self) -> str:
        return f"[{self.host}]:{self.port}"


@dataclass
class MapFile:
    ref: MapRef
    setting_line: int
    text: str | None  # None: the source file does not exist
    mtime: float = 0.0
    compiled_mtime: float | None = None


@dataclass
class ConfigView:
    """What the rules look at; built by check.py from a config directory."""

    main_cf: str
    params: dict[str, Param]
    effective: dict[str, str]
    maps: list[MapFile] = field(default_factory=list)
    services: set[str] = field(default_factory=set)
    map_types: set[str] = field(default_factory=set)
    ca_exists: Callable[[str], bool] = lambda path: True

    def line_of(self, name: str) -> int:
        param = self.params.get(name)
        return param.line if param else 0

    @property
    def wrappermode(self) -> bool:
        return self.effective.get("smtp_tls_wrappermode", "no").lower() == "yes"


@dataclass(frozen=True)
class Where:
    """Where a next hop was written, and how to write it right there."""

    file: str
    line: int
    label: str
    fix_template: str  # `{hop}` is replaced by the right next hop


def expected_relay(
    relay_host: str | None,
    location: str | None,
    provider_domain: str,
    relayhost_value: str,
) -> Relay | None:
    """The relay from --relay-host, else --location, else main.cf's relayhost."""
    if relay_host:
        hop = parse_nexthop(relay_host)
        if hop is None or hop.port_in_brackets:
            raise ValueError(f"--relay-host {relay_host!r}: write HOST:PORT")
        return Relay(hop.host.lower(), hop.port or SUBMISSION_PORT)
    if location:
        return Relay(f"{location.lower()}-tls.{provider_domain}", SUBMISSION_PORT)
    hop = parse_nexthop(relayhost_value.split(",")[0]) if relayhost_value else None
    if hop is None:
        return None
    port = hop.port if hop.port not in (None, 25) else SUBMISSION_PORT
    return Relay(hop.host.lower(), port)


def check_hop(
    hop: NextHop,
    relay: Relay,
    where: Where,
    view: ConfigView,
    mx: MxLookup | None,
) -> list[Finding]:
    """Brackets, host and port of one next hop that should be the relay."""
    fix = where.fix_template.format(hop=relay.nexthop())
    at = {"file": where.file, "line": where.line}
    if hop.port_in_brackets:
        return [
            F.error(
                "port-in-brackets",
                f"{where.label}: port inside the brackets; Postfix would look up "
                f"a host literally named {hop.host}:{hop.port}",
                fix,
                **at,
            )
        ]
    found = _brackets(hop, relay, where, mx, fix)
    found += _host(hop, relay, where, fix)
    found += _port(hop, relay, where, view, fix)
    if not found:
        found.append(F.ok("relay-nexthop", f"{where.label}: {hop}", **at))
    return found


def _brackets(hop, relay, where, mx, fix) -> list[Finding]:
    if hop.bracketed:
        return []
    at = {"file": where.file, "line": where.line}
    if mx is not None:
        try:
            exchanges = mx(hop.host)
        except LookupFailed as exc:
            exchanges = []
            note = f" (MX lookup failed: {exc})"
        else:
            note = ""
        elsewhere = [h for h in exchanges if h.lower() != relay.host.lower()]
        if elsewhere:
            return [
                F.error(
                    "mx-elsewhere",
                    f"{where.label}: without [] Postfix looks up the MX of "
                    f"{hop.host}, which is {', '.join(elsewhere)}, not the relay "
                    f"{relay.host}: mail would go to the wrong host",
                    fix,
                    **at,
                )
            ]
    else:
        note = " (not looked up: --offline)"
    return [
        F.warning(
            "no-brackets",
            f"{where.label}: {hop} without [] triggers an MX lookup of "
            f"{hop.host}; it works only while {hop.host} has no MX record{note}",
            fix,
            **at,
        )
    ]


def _host(hop, relay, where, fix) -> list[Finding]:
    if hop.host.lower() == relay.host.lower():
        return []
    at = {"file": where.file, "line": where.line}
    other = Relay(hop.host.lower())
    if other.location and relay.location and other.domain == relay.domain:
        return [
            F.error(
                "other-location",
                f"{where.label}: {hop.host} is the relay of location "
                f"{other.location}, but this server belongs to {relay.location}; "
                f"that relay does not accept it",
                fix,
                **at,
            )
        ]
    return [
        F.error(
            "wrong-relay",
            f"{where.label}: next hop {hop.host} is not the relay {relay.host}",
            fix,
            **at,
        )
    ]


def _port(hop, relay, where, view, fix) -> list[Finding]:
    at = {"file": where.file, "line": where.line}
    port = hop.port or 25
    if port == 25:
        return [
            F.error(
                "port-25",
                f"{where.label}: port 25; the relay takes customers only on "
                f"{SUBMISSION_PORT} (STARTTLS) or {SMTPS_PORT} "
                f"(with smtp_tls_wrappermode = yes)",
                fix,
                **at,
            )
        ]
    if port != relay.port:
        return [
            F.error(
                "wrong-port",
                f"{where.label}: port {port}, the relay listens on {relay.port}",
                fix,
                **at,
            )
        ]
    if port == SMTPS_PORT and not view.wrappermode:
        return [
            F.error(
                "wrappermode-missing",
                f"port {SMTPS_PORT} speaks TLS from the first byte, but "
                f"smtp_tls_wrappermode is not yes",
                "smtp_tls_wrappermode = yes",
                view.main_cf,
                view.line_of("smtp_tls_wrappermode"),
            )
        ]
    if port == SUBMISSION_PORT and view.wrappermode:
        return [
            F.error(
                "wrappermode-on-submission",
                f"smtp_tls_wrappermode = yes, but port {SUBMISSION_PORT} expects "
                f"STARTTLS",
                "postconf -X smtp_tls_wrappermode",
                view.main_cf,
                view.line_of("smtp_tls_wrappermode"),
            )
        ]
    return []


def check_relayhost(
    view: ConfigView, relay: Relay, mx: MxLookup | None
) -> list[Finding]:
    value = view.effective.get("relayhost", "")
    line = view.line_of("relayhost")
    where = Where(view.main_cf, line, "relayhost", "relayhost = {hop}")
    if not value:
        if any(_relay_entries(view, relay)):
            return [F.ok("relayhost-empty", "relayhost empty; transport map routes")]
        return [
            F.error(
                "relayhost-missing",
                "relayhost is not set and no transport map line points at the "
                "relay: no mail goes through it",
                f"relayhost = {relay.nexthop()}",
                view.main_cf,
            )
        ]
    found = []
    for item in re.split(r"[\s,]+", value):
        hop = parse_nexthop(item)
        if hop is None:
            found.append(
                F.error(
                    "relayhost-unreadable",
                    f"relayhost {item!r} is not [host]:port",
                    f"relayhost = {relay.nexthop()}",
                    view.main_cf,
                    line,
                )
            )
        else:
            found += check_hop(hop, relay, where, view, mx)
    return found


def _relay_entries(view: ConfigView, relay: Relay):
    for mapfile in view.maps:
        for entry in parse_entries(mapfile):
            _, _, nexthop = entry.value.partition(":")
            hop = parse_nexthop(nexthop)
            if hop and is_relay(hop.host, relay):
                yield entry


def parse_entries(mapfile: MapFile) -> list[MapEntry]:
    return parse_map(mapfile.text) if mapfile.text is not None else []


def is_relay(host: str, relay: Relay) -> bool:
    host = host.lower()
    other = Relay(host)
    return host == relay.host or bool(other.location and other.domain == relay.domain)


def check_transport_maps(
    view: ConfigView, relay: Relay, mx: MxLookup | None
) -> list[Finding]:
    if not view.effective.get("transport_maps", ""):
        return [
            F.warning(
                "transport-maps-missing",
                "transport_maps is not set, so no domain can be routed to the "
                "relay on its own (`tlsrelay client setup` writes one)",
                "transport_maps = hash:/etc/postfix/transport",
                view.main_cf,
            )
        ]
    found: list[Finding] = []
    for mapfile in view.maps:
        found += check_map_file(mapfile, view)
        for entry in parse_entries(mapfile):
            found += check_map_entry(entry, mapfile.ref.path, relay, view, mx)
    return found


def check_map_file(mapfile: MapFile, view: ConfigView) -> list[Finding]:
    """The table exists, its type is built in, and its compiled form is current."""
    ref = mapfile.ref
    at = {"file": view.main_cf, "line": mapfile.setting_line}
    if view.map_types and ref.type not in view.map_types:
        usable = "hash" if "hash" in view.map_types else "lmdb"
        return [
            F.error(
                "map-type-unsupported",
                f"transport_maps uses {ref.type}:, which this Postfix lacks "
                f"(see `postconf -m`)",
                f"transport_maps = {usable}:{ref.path}",
                **at,
            )
        ]
    if ref.compiled is None and ref.type not in TEXT_MAP_TYPES:
        return [F.ok("map-not-checked", f"{ref}: not a file table, not checked")]
    if mapfile.text is None:
        return [
            F.error(
                "map-file-missing",
                f"transport_maps names {ref.path}, which does not exist",
                f"create {ref.path} (or run `tlsrelay client setup`)",
                **at,
            )
        ]
    if ref.compiled is None:
        return []
    if mapfile.compiled_mtime is None:
        return [
            F.error(
                "map-not-compiled",
                f"{ref.compiled} is missing: Postfix reads that, not {ref.path}",
                f"postmap {ref} && postfix reload",
                **at,
            )
        ]
    if mapfile.mtime > mapfile.compiled_mtime:
        return [
            F.warning(
                "map-stale",
                f"{ref.path} is newer than {ref.compiled}: Postfix still uses the "
                f"old contents",
                f"postmap {ref.path} && postfix reload",
                ref.path,
            )
        ]
    return []


def check_map_entry(
    entry: MapEntry, path: str, relay: Relay, view: ConfigView, mx: MxLookup | None
) -> list[Finding]:
    at = {"file": path, "line": entry.line}
    value = entry.value
    if entry.key.lower() in SHELL_WORDS or entry.key[:1] in "/$~":
        return [
            F.error(
                "map-command",
                f"line looks like a shell command; key `{entry.key}` would become "
                f"a (useless) lookup key",
                f"remove the line and run `postmap {path}` in a shell",
                **at,
            )
        ]
    if not value:
        return [F.error("map-no-value", f"key {entry.key} has no value", "", **at)]
    if re.search(r"\s#", value):
        # The fix must be a line that is right as a whole: check what is left
        # without the comment and take its fix when it has a fault of its own.
        bare = MapEntry(entry.key, value.split("#")[0].strip(), entry.line)
        rest = [
            f
            for f in check_map_entry(bare, path, relay, view, mx)
            if f.severity != "ok"
        ]
        fixes = [f.fix for f in rest if f.fix.startswith(entry.key + " ")]
        return [
            F.error(
                "map-trailing-comment",
                "text after # is part of the value in a map (comments must "
                "start the line)",
                fixes[0] if fixes else f"{entry.key} {bare.value}",
                **at,
            ),
            *rest,
        ]
    transport, sep, nexthop = value.partition(":")
    if sep and nexthop[:1].isspace():
        hop = parse_nexthop(nexthop.strip())
        return [
            F.error(
                "map-space-after-transport",
                f"whitespace after `{transport}:`; the next hop must follow the "
                f"colon directly (as written it is mis-read or MX-looked-up)",
                f"{entry.key} {transport or 'smtp'}:{_right_hop(hop, relay)}",
                **at,
            )
        ]
    if not sep or re.search(r"[\[\].\s]", transport):
        hop = parse_nexthop(value)
        return [
            F.error(
                "map-no-transport",
                f"no transport name; Postfix would look for a master.cf service "
                f"named `{transport}`",
                f"{entry.key} smtp:{_right_hop(hop, relay)}",
                **at,
            )
        ]
    if view.services and transport not in view.services:
        return [
            F.error(
                "map-unknown-transport",
                f"transport `{transport}` is not a service in master.cf",
                f"{entry.key} smtp:{nexthop}",
                **at,
            )
        ]
    return _entry_hop(entry, path, transport, nexthop, relay, view, mx)


def _entry_hop(entry, path, transport, nexthop, relay, view, mx) -> list[Finding]:
    if not nexthop:
        return []
    hop = parse_nexthop(nexthop)
    where = Where(path, entry.line, f"transport {entry.key}", entry.key + " smtp:{hop}")
    if hop is None:
        return [
            F.error(
                "map-nexthop-unreadable",
                f"next hop {nexthop!r} is not [host]:port",
                where.fix_template.format(hop=relay.nexthop()),
                path,
                entry.line,
            )
        ]
    if hop.port_in_brackets or is_relay(hop.host, relay):
        return check_hop(hop, relay, where, view, mx)
    return []


def _right_hop(hop: NextHop | None, relay: Relay) -> str:
    if hop is None or is_relay(hop.host, relay):
        return relay.nexthop()
    return str(NextHop(hop.host, hop.port, True))


# Legacy switches Postfix uses when smtp_tls_security_level is empty.
def tls_level(effective: dict[str, str]) -> str:
    level = effective.get("smtp_tls_security_level", "").lower()
    if level:
        return level
    if effective.get("smtp_enforce_tls", "no").lower() == "yes":
        return "encrypt"
    if effective.get("smtp_use_tls", "no").lower() == "yes":
        return "may"
    return "none"


_DANE_FALLBACK = {"dane": "opportunistic TLS", "dane-only": "no delivery at all"}


def check_tls(view: ConfigView) -> list[Finding]:
    level = tls_level(view.effective)
    at = {"file": view.main_cf, "line": view.line_of("smtp_tls_security_level")}
    if level in ("none", "may", ""):
        return [
            F.error(
                "tls-level-low",
                f"smtp_tls_security_level is {level}: Postfix sends mail in "
                f"plaintext when STARTTLS is missing or stripped on the way",
                "smtp_tls_security_level = encrypt",
                **at,
            )
        ]
    if level in ("dane", "dane-only"):
        return [
            F.warning(
                "tls-level-dane",
                f"smtp_tls_security_level is {level}: without TLSA records for "
                f"the relay this means {_DANE_FALLBACK[level]}",
                "smtp_tls_security_level = encrypt",
                **at,
            )
        ]
    cafile = view.effective.get("smtp_tls_CAfile", "")
    if level in ("verify", "secure") and not (
        (cafile and view.ca_exists(cafile)) or view.effective.get("smtp_tls_CApath")
    ):
        return [
            F.error(
                "tls-ca-missing",
                f"smtp_tls_security_level = {level} needs the provider's CA, but "
                f"smtp_tls_CAfile {cafile or '(not set)'} does not exist",
                "smtp_tls_CAfile = /etc/ssl/certs/ca-certificates.crt",
                view.main_cf,
                view.line_of("smtp_tls_CAfile"),
            )
        ]
    return [F.ok("tls-level", f"smtp_tls_security_level = {level}", **at)]
