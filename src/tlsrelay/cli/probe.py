"""`tlsrelay probe HOST[:PORT]`: a TLS report of any SMTP server.

Banner, EHLO extensions, STARTTLS (or implicit TLS with --smtps), TLS
version and cipher, the certificate chain, whether the name matches, days to
expiry and whether a CA bundle trusts it. See tlsrelay.client.probe. Exit
status 0 when the server did TLS with a matching, unexpired certificate.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tlsrelay.cli import common
from tlsrelay.cli.main import CommandError
from tlsrelay.client import findings, resolve
from tlsrelay.client import probe as probing
from tlsrelay.client.rules import LookupFailed
from tlsrelay.client.tools import detect_layout
from tlsrelay.config import parse_hostport


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("probe", help="TLS report of any SMTP server")
    p.add_argument(
        "target", metavar="HOST[:PORT]", help="default port 25 (465 --smtps)"
    )
    p.add_argument("--smtps", action="store_true", help="TLS from the first byte")
    p.add_argument(
        "--cafile",
        type=Path,
        metavar="F",
        help="CA bundle to judge trust (default: the system's)",
    )
    p.add_argument("--dns", default="system", metavar="IP[:PORT]")
    p.add_argument("--helo", default="", help="EHLO name (default: this host's)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S")
    common.add_json_flag(p)
    p.set_defaults(func=cmd_probe)


def cmd_probe(args: argparse.Namespace) -> int:
    try:
        host, port = parse_hostport(args.target, 465 if args.smtps else 25)
    except ValueError as exc:
        raise CommandError(str(exc), 2) from None
    try:
        addresses = resolve.addresses(resolve.make_resolver(args.dns), host)
    except LookupFailed as exc:
        raise CommandError(f"cannot resolve {host}: {exc}") from None
    if not addresses:
        raise CommandError(f"{host} has no address")
    options = probing.ProbeOptions(
        smtps=args.smtps,
        cafile=args.cafile or detect_layout().ca_bundle,
        helo=args.helo,
        timeout_s=args.timeout,
    )
    result = probing.probe(host, addresses[0], port, options)
    found = probing.findings(result)
    if args.json:
        document = result.as_dict()
        document["findings"] = [f.as_dict() for f in found]
        common.print_json(document)
    else:
        print(probing.render(result))
        print(findings.render(f for f in found if f.severity != "ok"))
    return 0 if all(f.severity != "error" for f in found) else 1
