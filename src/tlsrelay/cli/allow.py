"""`tlsrelay allow add|remove|list LOCATION [IP_OR_NETWORK]`: filtering lists.

Operators edit a location's list by hand here (customers go through
enablement requests). A /0 is refused; a private or loopback range is
accepted with a warning (a listed NAT or proxy address would let everyone
behind it relay). A change to this node's own location is published to the
local snapshot at once; other nodes pick it up from the store.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from tlsrelay.cli import common
from tlsrelay.cli.db import guarded
from tlsrelay.control import db, lists


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "allow", help="edit the filtering list of a location"
    )
    sub = parser.add_subparsers(dest="allow_command", metavar="ACTION", required=True)
    for name, func, text in (
        ("add", cmd_add, "allow IP_OR_NETWORK to relay through LOCATION"),
        ("remove", cmd_remove, "take IP_OR_NETWORK off LOCATION's list"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("location", metavar="LOCATION")
        p.add_argument("network", metavar="IP_OR_NETWORK")
        common.add_json_flag(p)
        p.set_defaults(func=func)
    p = sub.add_parser("list", help="show LOCATION's list")
    p.add_argument("location", metavar="LOCATION")
    p.add_argument(
        "network", metavar="IP_OR_NETWORK", nargs="?", help="only entries overlapping"
    )
    common.add_json_flag(p)
    p.set_defaults(func=cmd_list)


def actor() -> str:
    """Who ran the command, for list entries and the audit log."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def cmd_add(args: argparse.Namespace) -> int:
    settings = common.settings(args)
    with guarded():
        network = lists.parse_network(args.network)
        warning = lists.private_warning(network)
        if warning:
            print(f"tlsrelay: warning: {warning}", file=sys.stderr)
        db.ensure(settings)
        with db.transaction(settings) as session:
            entry = lists.add(session, args.location, network, actor())
            db.audit(session, actor(), "list.add", f"{entry.location} {network}")
            document = lists.entry_json(entry)
        lists.publish_if_local(settings, entry.location)
    if args.json:
        common.print_json(document)
    else:
        print(f"added {network} to the {entry.location} list")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    settings = common.settings(args)
    with guarded():
        network = lists.parse_network(args.network)
        db.ensure(settings)
        with db.transaction(settings) as session:
            entry = lists.remove(session, args.location, network)
            db.audit(session, actor(), "list.remove", f"{entry.location} {network}")
            document = lists.entry_json(entry)
        lists.publish_if_local(settings, entry.location)
    if args.json:
        common.print_json(document)
    else:
        print(f"removed {network} from the {entry.location} list")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    settings = common.settings(args)
    with guarded():
        wanted = lists.parse_network(args.network) if args.network else None
        db.ensure(settings)
        with db.transaction(settings) as session:
            found = lists.entries(session, args.location)
            if wanted is not None:
                keep = (
                    {
                        e.id
                        for e in lists.overlapping(session, found[0].location, wanted)
                    }
                    if found
                    else set()
                )
                found = [e for e in found if e.id in keep]
            documents = [lists.entry_json(e) for e in found]
    if args.json:
        common.print_json(documents)
        return 0
    for d in documents:
        origin = f" request {d['request_id']}" if d["request_id"] else ""
        print(f"{d['network']:<43} {d['added_at']} {d['added_by']}{origin}")
    return 0
