"""`tlsrelay customer add|list`: customer accounts of the control plane."""

from __future__ import annotations

import argparse

from tlsrelay.cli import common
from tlsrelay.cli.allow import actor
from tlsrelay.cli.db import guarded
from tlsrelay.control import accounts, db


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("customer", help="manage customers")
    sub = parser.add_subparsers(
        dest="customer_command", metavar="ACTION", required=True
    )
    p = sub.add_parser("add", help="add a customer")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--email", required=True, metavar="ADDR", help="contact for notices")
    p.add_argument(
        "--webhook", metavar="URL", help="POST signed JSON notices here as well"
    )
    common.add_json_flag(p)
    p.set_defaults(func=cmd_add)
    p = sub.add_parser("list", help="list customers")
    common.add_json_flag(p)
    p.set_defaults(func=cmd_list)


def cmd_add(args: argparse.Namespace) -> int:
    settings = common.settings(args)
    with guarded():
        db.ensure(settings)
        with db.transaction(settings) as session:
            customer, secret = accounts.add_customer(
                session, args.name, args.email, args.webhook
            )
            db.audit(session, actor(), "customer.add", f"customer {customer.name}")
            document = accounts.customer_json(customer)
    if secret:
        # Shown once: the customer checks webhook signatures with it.
        document["webhook_secret"] = secret
    if args.json or secret:
        common.print_json(document)
    else:
        print(f"added customer {customer.name} <{customer.email}>")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    settings = common.settings(args)
    with guarded():
        db.ensure(settings)
        with db.transaction(settings) as session:
            documents = [
                accounts.customer_json(c)
                for c in session.scalars(
                    db.select(db.Customer).order_by(db.Customer.name)
                )
            ]
    if args.json:
        common.print_json(documents)
    else:
        for d in documents:
            print(f"{d['name']:<24} {d['email']}")
    return 0
