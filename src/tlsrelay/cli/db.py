"""`tlsrelay db upgrade`: create or migrate the control store by hand.

Also home of `guarded()`, which the control-plane command groups (allow,
customer, user, request) use to turn control-plane refusals and store outages
into one-line CommandErrors.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

from tlsrelay import config
from tlsrelay.cli import common
from tlsrelay.cli.main import CommandError
from tlsrelay.control import db
from tlsrelay.control.errors import ControlError, Invalid, StoreUnavailable


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("db", help="manage the control store")
    sub = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    p = sub.add_parser("upgrade", help="apply the store's migrations")
    p.set_defaults(func=cmd_upgrade)


@contextmanager
def guarded() -> Iterator[None]:
    """Control-plane refusals exit 1, an unreachable store exits 3."""
    try:
        yield
    except Invalid as exc:
        if len(exc.problems) == 1:
            raise CommandError(exc.problems[0]) from None
        lines = "\n  ".join(exc.problems)
        raise CommandError(f"refused:\n  {lines}") from None
    except ControlError as exc:
        raise CommandError(str(exc)) from None
    except StoreUnavailable as exc:
        raise CommandError(str(exc), status=3) from None


def cmd_upgrade(args: argparse.Namespace) -> int:
    settings = common.settings(args)
    with guarded():
        db.upgrade(settings)
    print(f"store {db.safe_url(config.store_url(settings))} is at the newest schema")
    return 0
