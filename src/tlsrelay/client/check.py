"""`tlsrelay client check`: find what is wrong with a customer's Postfix.

Offline part: main.cf and every file table in transport_maps are parsed here
(for file:line), effective values come from Postfix's `postconf -x`, table
types from `postconf -m`; rules.py turns that into findings. Online part:
the relay host is resolved, a bare relayhost's MX is looked up, and one SMTP
session (probe.py) checks STARTTLS, the certificate and, with the access
probe, whether this server's IP is enabled. The session leaves from
smtp_bind_address when Postfix has one, so the relay sees the same IP
Postfix would use.

It never edits any file and never sends a message.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tlsrelay.client import findings as F
from tlsrelay.client import probe as probing
from tlsrelay.client import resolve, rules
from tlsrelay.client.findings import Finding
from tlsrelay.client.postfixconf import map_refs, master_services, parse_main_cf
from tlsrelay.client.rules import ConfigView, LookupFailed, MapFile, Relay
from tlsrelay.client.tools import Layout, Postfix, ToolError, detect_layout

PARAMS = (
    "relayhost",
    "transport_maps",
    "smtp_tls_security_level",
    "smtp_tls_CAfile",
    "smtp_tls_CApath",
    "smtp_tls_wrappermode",
    "smtp_use_tls",
    "smtp_enforce_tls",
    "smtp_bind_address",
)
# Compared between our parse and `postconf -n`, to catch a misread file.
CROSS_CHECKED = ("relayhost", "transport_maps", "smtp_tls_security_level")


class CheckError(Exception):
    """The check cannot run at all (no main.cf, no relay to compare with)."""


@dataclass(frozen=True)
class CheckOptions:
    relay_host: str | None = None
    location: str | None = None
    provider_domain: str = "relay.example"
    offline: bool = False
    nameserver: str = "system"
    cafile: Path | None = None
    helo: str = ""
    timeout_s: float = 30.0


@dataclass
class CheckReport:
    relay: Relay
    findings: list[Finding] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    probe: probing.ProbeResult | None = None

    @property
    def ok(self) -> bool:
        return F.all_right(self.findings)

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "relay": self.relay.nexthop(),
            "addresses": self.addresses,
            "findings": [f.as_dict() for f in self.findings],
            "probe": self.probe.as_dict() if self.probe else None,
        }


def load_view(postfix: Postfix) -> tuple[ConfigView, list[Finding]]:
    """Parse the config directory; findings about reading it come along."""
    try:
        text = postfix.main_cf.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CheckError(f"cannot read {postfix.main_cf}: {exc.strerror}") from None
    params = parse_main_cf(text)
    notes: list[Finding] = []
    # Postfix works out a missing myhostname through DNS, which takes seconds
    # on a machine without a resolvable name: ask only when it is written.
    names = PARAMS + (("myhostname",) if "myhostname" in params else ())
    try:
        effective = postfix.effective(*names)
        notes += _cross_check(params, postfix.explicit(), str(postfix.main_cf))
        map_types = postfix.map_types()
    except ToolError as exc:
        notes.append(F.warning("postconf-failed", f"postconf: {exc}"))
        effective = {name: p.value for name, p in params.items()}
        map_types = set()
    try:
        services = master_services(postfix.master_cf.read_text(encoding="utf-8"))
    except OSError:
        services = set()
    view = ConfigView(
        main_cf=str(postfix.main_cf),
        params=params,
        effective=effective,
        maps=_map_files(effective.get("transport_maps", ""), params),
        services=services,
        map_types=map_types,
        ca_exists=lambda path: Path(path).exists(),
    )
    return view, notes


def _cross_check(params, explicit, main_cf) -> list[Finding]:
    found = []
    for name in CROSS_CHECKED:
        ours = params[name].value if name in params else ""
        if ours != explicit.get(name, ""):
            found.append(
                F.warning(
                    "parse-mismatch",
                    f"{name}: read as {ours!r}, postconf -n says "
                    f"{explicit.get(name, '')!r}",
                    file=main_cf,
                    line=params[name].line if name in params else 0,
                )
            )
    return found


def _map_files(value: str, params) -> list[MapFile]:
    line = params["transport_maps"].line if "transport_maps" in params else 0
    files = []
    for ref in map_refs(value):
        path = Path(ref.path)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
            mtime = path.stat().st_mtime
        except OSError:
            text, mtime = None, 0.0
        compiled = ref.compiled
        compiled_mtime = None
        if compiled is not None and compiled.exists():
            compiled_mtime = compiled.stat().st_mtime
        files.append(MapFile(ref, line, text, mtime, compiled_mtime))
    return files


def offline_findings(
    view: ConfigView, relay: Relay, mx: rules.MxLookup | None
) -> list[Finding]:
    found = (
        rules.check_relayhost(view, relay, mx)
        + rules.check_transport_maps(view, relay, mx)
        + rules.check_tls(view)
    )
    # A global setting (smtp_tls_wrappermode) can be named by several hops.
    return list(dict.fromkeys(found))


def run(
    postfix: Postfix,
    options: CheckOptions,
    resolver_factory: Callable[[str], object] = resolve.make_resolver,
    layout: Layout | None = None,
) -> CheckReport:
    view, notes = load_view(postfix)
    try:
        relay = rules.expected_relay(
            options.relay_host,
            options.location,
            options.provider_domain,
            view.effective.get("relayhost", ""),
        )
    except ValueError as exc:
        raise CheckError(str(exc)) from None
    if relay is None:
        raise CheckError(
            f"no relayhost in {postfix.main_cf}: name the relay with "
            f"--relay-host HOST:PORT or --location LOC"
        )
    report = CheckReport(relay, notes)
    if options.offline:
        report.findings += offline_findings(view, relay, None)
        return report
    resolver = resolver_factory(options.nameserver)
    report.findings += offline_findings(
        view, relay, lambda name: resolve.mx_hosts(resolver, name)
    )
    report.findings += _online(view, relay, resolver, options, layout, report)
    return report


def _online(view, relay, resolver, options, layout, report) -> list[Finding]:
    try:
        report.addresses = resolve.addresses(resolver, relay.host)
    except LookupFailed as exc:
        return [F.error("relay-dns-failed", f"{relay.host}: {exc}")]
    if not report.addresses:
        return [
            F.error(
                "relay-unresolved",
                f"{relay.host} has no address: the name is wrong, or DNS is",
                "check the relay host name (tlsrelay client check --location LOC)",
            )
        ]
    found = [F.ok("relay-resolved", f"{relay.host}: {', '.join(report.addresses)}")]
    layout = layout or detect_layout()
    myhostname = view.effective.get("myhostname", "") or socket.getfqdn()
    cafile = options.cafile or Path(
        view.effective.get("smtp_tls_CAfile", "") or layout.ca_bundle
    )
    probe_options = probing.ProbeOptions(
        smtps=view.wrappermode,
        cafile=cafile,
        helo=options.helo or myhostname,
        timeout_s=options.timeout_s,
        source_ip=view.effective.get("smtp_bind_address", "") or None,
        access_host=myhostname,
    )
    report.probe = probing.probe(
        relay.host, report.addresses[0], relay.port, probe_options
    )
    need_trust = rules.tls_level(view.effective) in ("verify", "secure")
    return found + probing.findings(report.probe, need_trust)
