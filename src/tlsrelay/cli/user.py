"""`tlsrelay user add|passwd`: portal and API users.

`user add` prints the user's API token once, as {"token": ...}; only its hash
is stored. `user passwd NAME` reads the portal password from standard input
(one line), so it never shows up in the process list or shell history.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from tlsrelay.cli import common
from tlsrelay.cli.allow import actor
from tlsrelay.cli.db import guarded
from tlsrelay.cli.main import CommandError
from tlsrelay.control import accounts, db


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("user", help="manage portal and API users")
    sub = parser.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    p = sub.add_parser("add", help="add a user and print its API token once")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--role", required=True, choices=("customer", "staff"))
    p.add_argument("--customer", metavar="NAME", help="the customer of a customer user")
    common.add_json_flag(p)
    p.set_defaults(func=cmd_add)
    p = sub.add_parser("passwd", help="set the portal password from standard input")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_passwd)


def cmd_add(args: argparse.Namespace) -> int:
    settings = common.settings(args)
    with guarded():
        db.ensure(settings)
        with db.transaction(settings) as session:
            user, token = accounts.add_user(
                session, args.name, args.role, args.customer
            )
            db.audit(
                session, actor(), "user.add", f"user {user.name}", f"role={user.role}"
            )
    common.print_json(
        {
            "user": user.name,
            "role": user.role,
            "customer": args.customer,
            "token": token,
        }
    )
    return 0


def read_password() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("password: ")
    line = sys.stdin.readline()
    if not line:
        raise CommandError("no password on standard input")
    return line.rstrip("\r\n")


def cmd_passwd(args: argparse.Namespace) -> int:
    settings = common.settings(args)
    password = read_password()
    with guarded():
        db.ensure(settings)
        with db.transaction(settings) as session:
            user = accounts.set_password(session, args.name, password)
            db.audit(session, actor(), "user.passwd", f"user {user.name}")
    print(f"password of {args.name} set")
    return 0
