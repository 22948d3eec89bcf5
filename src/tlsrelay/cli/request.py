"""`tlsrelay request submit|list|show|approve|reject|revoke`: enablement requests.

The operator acts as staff (named cli:USER in the audit log). `submit` prints
the new request as JSON; the others print text, or JSON with --json. A
decision about this node's location is published to the local snapshot at
once, and the customer is notified (control/notices.py).
"""

from __future__ import annotations

import argparse

from tlsrelay.cli import common
from tlsrelay.cli.allow import actor
from tlsrelay.cli.db import guarded
from tlsrelay.control import accounts, db, enablement


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("request", help="enablement requests")
    sub = parser.add_subparsers(dest="request_command", metavar="ACTION", required=True)

    p = sub.add_parser("submit", help="ask that a server's IPs may relay")
    p.add_argument("--customer", required=True, metavar="NAME")
    p.add_argument("--location", required=True, metavar="LOC")
    p.add_argument("--relay-host", metavar="HOST:PORT")
    p.add_argument("--server-ip", required=True, metavar="IP")
    p.add_argument(
        "--ip", action="append", default=[], metavar="IP", help="further mailing IP"
    )
    p.add_argument("--note", default="", metavar="TEXT")
    common.add_json_flag(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("list", help="list requests")
    p.add_argument("--status", choices=db.STATUSES)
    common.add_json_flag(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="show one request")
    p.add_argument("id", type=int, metavar="ID")
    common.add_json_flag(p)
    p.set_defaults(func=cmd_show)

    for verb, text in (
        ("approve", "list the request's IPs and notify the customer"),
        ("reject", "refuse the request with a reason"),
        ("revoke", "take an approved request's IPs off the list"),
    ):
        p = sub.add_parser(verb, help=text)
        p.add_argument("id", type=int, metavar="ID")
        if verb != "approve":
            p.add_argument("--reason", required=verb == "reject", default="")
        common.add_json_flag(p)
        p.set_defaults(func=cmd_decide, verb=verb)


def _operator() -> accounts.Actor:
    return accounts.operator(actor())


def cmd_submit(args: argparse.Namespace) -> int:
    settings = common.settings(args)
    sub = enablement.Submission(
        location=args.location,
        server_ip=args.server_ip,
        ips=args.ip,
        relay_host=args.relay_host,
        note=args.note,
        customer=args.customer,
    )
    with guarded():
        db.ensure(settings)
        document = enablement.submit_and_notify(settings, _operator(), sub)
    common.print_json(document)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    settings = common.settings(args)
    with guarded():
        db.ensure(settings)
        with db.transaction(settings) as session:
            documents = [
                enablement.request_json(session, r)
                for r in enablement.visible(session, _operator(), args.status)
            ]
    if args.json:
        common.print_json(documents)
        return 0
    for d in documents:
        print(
            f"{d['id']:>5} {d['status']:<9} {d['location']:<4} {d['customer']:<20} "
            f"{' '.join(d['ips'])}"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    settings = common.settings(args)
    with guarded():
        db.ensure(settings)
        with db.transaction(settings) as session:
            document = enablement.request_json(
                session, enablement.get(session, _operator(), args.id)
            )
    if args.json:
        common.print_json(document)
        return 0
    for key, value in document.items():
        if isinstance(value, list):
            value = " ".join(value)
        print(f"{key + ':':<14} {value if value is not None else ''}")
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    settings = common.settings(args)
    with guarded():
        db.ensure(settings)
        document = enablement.decide_and_notify(
            settings, _operator(), args.verb, args.id, getattr(args, "reason", "")
        )
    if args.json:
        common.print_json(document)
    else:
        print(f"request {document['id']} {document['status']}")
    return 0
