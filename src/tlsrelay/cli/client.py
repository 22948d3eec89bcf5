"""`tlsrelay client setup|check|test|request`: the customer's side.

Run on a customer's mail server, against its Postfix (/etc/postfix unless
--postfix-dir). Thin: options are parsed here and handed to the modules of
tlsrelay.client, whose docstrings say how each works. These commands read no
tlsrelay config file; the provider's domain comes from --provider-domain.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tlsrelay import config
from tlsrelay.cli import common
from tlsrelay.cli.main import CommandError
from tlsrelay.client import check, findings, rules, sendtest, setup
from tlsrelay.client import request as enable
from tlsrelay.client.tools import (
    DEBIAN,
    DEFAULT_CONFIG_DIR,
    RHEL,
    Postfix,
    ToolError,
    detect_layout,
)

LAYOUTS = {"debian": DEBIAN, "rhel": RHEL}
PROVIDER_DOMAIN = config.ControlSettings.provider_domain


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "client", help="set up, check and test a customer's Postfix for the relay"
    )
    sub = parser.add_subparsers(dest="client_command", metavar="ACTION", required=True)
    _setup_parser(sub)
    _check_parser(sub)
    _test_parser(sub)
    _request_parser(sub)


def _common(p: argparse.ArgumentParser, relay: bool = True) -> None:
    p.add_argument(
        "--postfix-dir",
        type=Path,
        default=DEFAULT_CONFIG_DIR,
        metavar="DIR",
        help="Postfix config directory (default: /etc/postfix)",
    )
    if relay:
        p.add_argument("--relay-host", metavar="HOST:PORT", help="the relay to use")
        p.add_argument("--location", metavar="LOC", help="or: your location's relay")
        p.add_argument(
            "--provider-domain",
            default=PROVIDER_DOMAIN,
            metavar="DOMAIN",
            help=f"relay hosts are LOC-tls.DOMAIN (default: {PROVIDER_DOMAIN})",
        )
    common.add_json_flag(p)


def _setup_parser(sub) -> None:
    p = sub.add_parser("setup", help="point Postfix at the relay")
    _common(p)
    p.add_argument(
        "--domain",
        action="append",
        default=[],
        metavar="D",
        help="route domain D through the relay (repeatable)",
    )
    p.add_argument("--ca-file", type=Path, metavar="F", help="CA bundle to trust")
    p.add_argument(
        "--verify",
        action="store_true",
        help="verify the relay's certificate (level secure)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the diff only")
    p.add_argument("--no-reload", action="store_true", help="do not reload Postfix")
    p.add_argument("--os", choices=sorted(LAYOUTS), help="override OS detection")
    p.set_defaults(func=cmd_setup)


def _check_parser(sub) -> None:
    p = sub.add_parser("check", help="find what is wrong, with the fix")
    _common(p)
    p.add_argument("--offline", action="store_true", help="no DNS, no connection")
    p.add_argument(
        "--dns",
        default="system",
        metavar="IP[:PORT]",
        help="name server to ask (default: the system's)",
    )
    p.add_argument("--ca-file", type=Path, metavar="F", help="CA bundle to trust")
    p.add_argument("--helo", default="", help="EHLO name (default: myhostname)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S")
    p.add_argument("--os", choices=sorted(LAYOUTS), help="override OS detection")
    p.set_defaults(func=cmd_check)


def _test_parser(sub) -> None:
    p = sub.add_parser("test", help="send a test message and follow it")
    _common(p, relay=False)
    p.add_argument("--to", required=True, metavar="ADDR")
    p.add_argument(
        "--from",
        dest="sender",
        metavar="ADDR",
        help="envelope sender (default: postmaster@myhostname)",
    )
    p.add_argument("--maillog", type=Path, metavar="F", help="Postfix's log file")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S")
    p.add_argument("--os", choices=sorted(LAYOUTS), help="override OS detection")
    p.set_defaults(func=cmd_test)


def _request_parser(sub) -> None:
    p = sub.add_parser("request", help="ask the provider to enable this server")
    p.add_argument("--api", metavar="URL", help="the provider's portal/API URL")
    p.add_argument(
        "--token",
        default=os.environ.get("TLSRELAY_TOKEN", ""),
        help="API token (default: $TLSRELAY_TOKEN); without: print a ticket",
    )
    p.add_argument("--location", required=True, metavar="LOC")
    p.add_argument("--server-ip", required=True, metavar="IP")
    p.add_argument(
        "--ip",
        action="append",
        default=[],
        metavar="IP",
        help="a further mailing IP or network (repeatable)",
    )
    p.add_argument("--note", default="")
    p.add_argument("--provider-domain", default=PROVIDER_DOMAIN, metavar="DOMAIN")
    common.add_json_flag(p)
    p.set_defaults(func=cmd_request)


def _layout(args):
    return LAYOUTS[args.os] if args.os else detect_layout()


def _relay(args, postfix: Postfix | None = None) -> rules.Relay:
    current = ""
    if postfix is not None and not (args.relay_host or args.location):
        current = postfix.effective("relayhost").get("relayhost", "")
    try:
        relay = rules.expected_relay(
            args.relay_host, args.location, args.provider_domain, current
        )
    except ValueError as exc:
        raise CommandError(str(exc), 2) from None
    if relay is None:
        raise CommandError(
            "name the relay: --relay-host HOST:PORT or --location LOC", 2
        )
    return relay


def cmd_setup(args: argparse.Namespace) -> int:
    postfix = Postfix(args.postfix_dir)
    options = setup.SetupOptions(
        relay=_relay(args),
        domains=tuple(args.domain),
        ca_file=args.ca_file,
        verify=args.verify,
        dry_run=args.dry_run,
        reload=not args.no_reload,
    )
    try:
        result = setup.run(postfix, _layout(args), options)
    except (setup.SetupError, ToolError) as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        common.print_json(
            {
                "changed": result.changed,
                "diff": result.diff,
                "backups": [str(p) for p in result.backups],
                "steps": result.steps,
            }
        )
        return 0
    if result.diff:
        sys.stdout.write(result.diff)
    for path in result.backups:
        print(f"backup: {path}")
    for step in result.steps:
        print(step)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    options = check.CheckOptions(
        relay_host=args.relay_host,
        location=args.location,
        provider_domain=args.provider_domain,
        offline=args.offline,
        nameserver=args.dns,
        cafile=args.ca_file,
        helo=args.helo,
        timeout_s=args.timeout,
    )
    try:
        report = check.run(Postfix(args.postfix_dir), options, layout=_layout(args))
    except check.CheckError as exc:
        raise CommandError(str(exc), 2) from None
    if args.json:
        common.print_json(report.as_dict())
    else:
        print(f"relay: {report.relay.nexthop()}")
        print(findings.render(report.findings))
        print("all right" if report.ok else "needs attention: see the fixes above")
    return 0 if report.ok else 1


def cmd_test(args: argparse.Namespace) -> int:
    postfix = Postfix(args.postfix_dir)
    try:
        hostname = postfix.effective("myhostname").get("myhostname", "localhost")
        maillog = sendtest.maillog_path(postfix, _layout(args).maillog, args.maillog)
        sender = args.sender or f"postmaster@{hostname}"
        result = sendtest.run(
            postfix, maillog, sender, args.to, hostname, timeout_s=args.timeout
        )
    except (sendtest.SendTestError, ToolError) as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        common.print_json(result.as_dict())
    else:
        for hop in result.hops:
            print(f"{hop.step:<10} {hop.detail}")
        print(
            "delivered to the relay" if result.ok else f"not relayed: {result.status}"
        )
    return 0 if result.ok else 1


def cmd_request(args: argparse.Namespace) -> int:
    item = enable.Enablement(
        location=args.location.upper(),
        server_ip=args.server_ip,
        ips=tuple(args.ip),
        note=args.note,
    )
    try:
        enable.validate(item)
    except enable.RequestError as exc:
        raise CommandError(str(exc), 2) from None
    relay = enable.relay_host(args.location, args.provider_domain)
    if not args.token:
        if args.json:
            common.print_json(
                {"submitted": False, "ticket": enable.ticket(item, relay)}
            )
        else:
            print("No API token: send this text to your provider.\n")
            sys.stdout.write(enable.ticket(item, relay))
        return 0
    if not args.api:
        raise CommandError("--api URL is needed with a token", 2)
    try:
        outcome = enable.submit(item, args.api, args.token)
    except enable.RequestError as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        common.print_json(outcome.document)
    else:
        doc = outcome.document
        ips = ", ".join(map(str, doc.get("ips", [])))
        print(
            f"request {doc.get('id')} submitted: {doc.get('status')}, "
            f"relay host {doc.get('relay_host')}, IPs {ips}"
        )
    return 0
