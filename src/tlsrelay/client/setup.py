"""`tlsrelay client setup`: point a customer's Postfix at the relay, safely.

What it sets (the customer guide says why):

    relayhost               = [HOST]:PORT        brackets: no MX lookup
    smtp_tls_security_level = encrypt            (secure with --verify)
    smtp_tls_CAfile         = the OS bundle or --ca-file
    smtp_tls_loglevel       = 1                  so the log shows the TLS hop
    smtp_tls_wrappermode    = yes                only for port 465
    transport_maps          = hash:DIR/transport (lmdb where hash is missing)

and one `DOMAIN smtp:[HOST]:PORT` line per --domain in DIR/transport.

How: the change is first made on a copy of main.cf in a temporary directory
with `postconf -c COPY -e/-X`, and the copy is compared with the original.
No difference means nothing to do (a second run changes nothing, not even a
timestamp). --dry-run prints that comparison as a unified diff and stops.
Otherwise the files are backed up with a timestamp, the same postconf
commands run on the real directory, postmap builds the table, postconf and
`postmap -q` confirm the result, and Postfix is reloaded.

It never edits main.cf text itself, never removes a transport line it did
not understand without leaving it as a comment, and never reloads a Postfix
other than the one whose directory it changed.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tlsrelay.client import rules
from tlsrelay.client.postfixconf import map_refs, parse_map
from tlsrelay.client.rules import ConfigView, Relay
from tlsrelay.client.tools import Layout, Postfix, ToolError

TRANSPORT_NAME = "transport"
_DOMAIN = re.compile(r"^\.?(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z0-9-]{2,}$")
_HEADER = "# Routes to the TLS relay; written by `tlsrelay client setup`.\n"


class SetupError(Exception):
    """Setup cannot (or must not) go on; the message says what to do."""


@dataclass(frozen=True)
class SetupOptions:
    relay: Relay
    domains: tuple[str, ...] = ()
    ca_file: Path | None = None
    verify: bool = False
    dry_run: bool = False
    reload: bool = True


@dataclass
class SetupResult:
    diff: str = ""
    changed: bool = False
    backups: list[Path] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    settings: dict[str, str]
    unset: list[str]
    map_ref: str
    transport_text: str


def check_domains(domains: tuple[str, ...]) -> tuple[str, ...]:
    cleaned = tuple(dict.fromkeys(d.strip().lower().rstrip(".") for d in domains))
    for domain in cleaned:
        if not _DOMAIN.match(domain):
            raise SetupError(f"--domain {domain!r} is not a domain name")
    return cleaned


def plan(postfix: Postfix, layout: Layout, options: SetupOptions) -> Plan:
    explicit = postfix.explicit()
    types = postfix.map_types()
    kind = "hash" if "hash" in types else "lmdb" if "lmdb" in types else ""
    if not kind:
        raise SetupError("this Postfix has neither hash nor lmdb tables (postconf -m)")
    transport = postfix.config_dir / TRANSPORT_NAME
    ca_file = options.ca_file or layout.ca_bundle
    if not ca_file.exists():
        raise SetupError(
            f"CA bundle {ca_file} does not exist: install the ca-certificates "
            f"package or pass --ca-file"
        )
    wanted = {
        "relayhost": options.relay.nexthop(),
        "smtp_tls_security_level": "secure" if options.verify else "encrypt",
        "smtp_tls_CAfile": str(ca_file),
        "transport_maps": _transport_maps(explicit, kind, transport),
    }
    if explicit.get("smtp_tls_loglevel", "0") in ("", "0"):
        wanted["smtp_tls_loglevel"] = "1"
    unset = []
    if options.relay.port == rules.SMTPS_PORT:
        wanted["smtp_tls_wrappermode"] = "yes"
    elif "smtp_tls_wrappermode" in explicit:
        unset.append("smtp_tls_wrappermode")
    settings = {k: v for k, v in wanted.items() if explicit.get(k) != v}
    current = transport.read_text(encoding="utf-8") if transport.exists() else None
    text = transport_text(current, check_domains(options.domains), options.relay)
    return Plan(settings, unset, f"{kind}:{transport}", text)


def _transport_maps(explicit: dict[str, str], kind: str, transport: Path) -> str:
    """Our table first, any other tables the customer had after it."""
    others = [str(r) for r in map_refs(explicit.get("transport_maps", ""))]
    others = [r for r in others if r.partition(":")[2] != str(transport)]
    return ", ".join([f"{kind}:{transport}", *others])


def transport_text(current: str | None, domains: tuple[str, ...], relay: Relay) -> str:
    """The transport file after setup: our lines last, broken lines disabled."""
    if current is None:
        current = _HEADER
    view = ConfigView("", {}, {})
    starts = {e.line: e for e in parse_map(current)}
    kept = []
    for number, raw in enumerate(current.splitlines(), start=1):
        entry = starts.get(number)
        if entry is None:
            kept.append(raw)
        elif entry.key.lower() in domains:
            continue
        elif _broken(entry, relay, view):
            kept.append(f"# disabled by tlsrelay client setup: {raw}")
        else:
            kept.append(_retarget(raw, entry, relay))
    kept += [f"{domain} smtp:{relay.nexthop()}" for domain in domains]
    return "\n".join(kept) + "\n"


def _broken(entry, relay: Relay, view: ConfigView) -> bool:
    found = rules.check_map_entry(entry, "", relay, view, None)
    return any(f.severity == "error" and f.code.startswith("map-") for f in found) or (
        any(f.code == "port-in-brackets" for f in found)
    )


def _retarget(raw: str, entry, relay: Relay) -> str:
    """A line routing to another of the provider's relays moves to ours."""
    transport, _, nexthop = entry.value.partition(":")
    hop = rules.parse_nexthop(nexthop)
    if hop is None or not rules.is_relay(hop.host, relay):
        return raw
    if nexthop == relay.nexthop():
        return raw
    return f"{entry.key} {transport}:{relay.nexthop()}"


def _stage(postfix: Postfix, the_plan: Plan, workdir: Path) -> str:
    """main.cf as postconf leaves it after the plan, made on a copy."""
    shutil.copy2(postfix.main_cf, workdir / "main.cf")
    if postfix.master_cf.exists():
        shutil.copy2(postfix.master_cf, workdir / "master.cf")
    staged = Postfix(workdir)
    staged.set(the_plan.settings)
    staged.unset(the_plan.unset)
    return (workdir / "main.cf").read_text(encoding="utf-8")


def _diff(path: Path, before: str, after: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"{path} (now)",
            tofile=f"{path} (after setup)",
        )
    )


def run(
    postfix: Postfix,
    layout: Layout,
    options: SetupOptions,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    writable: Callable[[Path], bool] = lambda p: os.access(p, os.W_OK),
) -> SetupResult:
    if not postfix.main_cf.exists():
        raise SetupError(f"{postfix.main_cf} does not exist: is Postfix installed?")
    the_plan = plan(postfix, layout, options)
    transport = postfix.config_dir / TRANSPORT_NAME
    main_before = postfix.main_cf.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="tlsrelay-setup-") as tmp:
        main_after = _stage(postfix, the_plan, Path(tmp))
    transport_before = transport.read_text("utf-8") if transport.exists() else ""
    result = SetupResult()
    result.diff = _diff(postfix.main_cf, main_before, main_after) + _diff(
        transport, transport_before, the_plan.transport_text
    )
    needs_postmap = result.diff != "" or _stale(the_plan.map_ref)
    if options.dry_run or not needs_postmap:
        result.steps.append("nothing to change" if not needs_postmap else "dry run")
        return result
    _refuse_without_rights(postfix, transport, writable)
    result.changed = True
    result.backups = _backup(postfix, transport, clock())
    _apply(postfix, the_plan, transport, transport_before, result)
    _confirm(postfix, the_plan, options, result)
    if options.reload:
        result.steps.append(_reload(postfix, layout))
    return result


def _stale(map_ref: str) -> bool:
    ref = map_refs(map_ref)[0]
    source, compiled = Path(ref.path), ref.compiled
    if compiled is None or not compiled.exists():
        return True
    return source.stat().st_mtime > compiled.stat().st_mtime


def _refuse_without_rights(postfix: Postfix, transport: Path, writable) -> None:
    for path in (postfix.config_dir, postfix.main_cf, transport):
        if path.exists() and not writable(path):
            raise SetupError(
                f"no permission to change {path}: run setup as root "
                f"(sudo tlsrelay client setup ...); nothing was changed"
            )


def _backup(postfix: Postfix, transport: Path, now: dt.datetime) -> list[Path]:
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    copies = []
    for path in (postfix.main_cf, transport):
        if path.exists():
            copy = path.with_name(f"{path.name}.tlsrelay-{stamp}")
            shutil.copy2(path, copy)
            copies.append(copy)
    return copies


def _apply(postfix, the_plan, transport, transport_before, result) -> None:
    try:
        postfix.set(the_plan.settings)
        postfix.unset(the_plan.unset)
    except ToolError as exc:
        raise SetupError(f"postconf failed: {exc}") from exc
    for name, value in the_plan.settings.items():
        result.steps.append(f"postconf -e '{name} = {value}'")
    result.steps += [f"postconf -X {name}" for name in the_plan.unset]
    if the_plan.transport_text != transport_before:
        tmp = transport.with_name(f".{transport.name}.tlsrelay.tmp")
        tmp.write_text(the_plan.transport_text, encoding="utf-8")
        tmp.chmod(0o644)
        os.replace(tmp, transport)
        result.steps.append(f"wrote {transport}")
    try:
        postfix.postmap(the_plan.map_ref)
    except ToolError as exc:
        raise SetupError(f"postmap failed: {exc}") from exc
    result.steps.append(f"postmap {the_plan.map_ref}")


def _confirm(postfix, the_plan, options, result) -> None:
    """Ask Postfix itself whether it now reads what we meant to write."""
    effective = postfix.effective(*the_plan.settings)
    wrong = {k: v for k, v in the_plan.settings.items() if effective.get(k) != v}
    relay_value = f"smtp:{options.relay.nexthop()}"
    for domain in check_domains(options.domains):
        if postfix.query(domain, the_plan.map_ref) != relay_value:
            wrong[f"{domain} in {the_plan.map_ref}"] = relay_value
    if wrong:
        backups = ", ".join(map(str, result.backups))
        raise SetupError(
            f"Postfix does not read back {sorted(wrong)}; backups: {backups}"
        )
    result.steps.append("confirmed with postconf -x and postmap -q")


def _reload(postfix: Postfix, layout: Layout) -> str:
    try:
        postfix.run("postfix", "-c", str(postfix.config_dir), "status")
    except ToolError:
        return "Postfix is not running: the settings apply when it starts"
    try:
        return f"reloaded: {postfix.reload(layout)}"
    except ToolError as exc:
        raise SetupError(f"reload failed: {exc}") from exc
