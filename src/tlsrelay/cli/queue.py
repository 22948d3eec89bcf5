"""`tlsrelay queue`: list, show and change messages in the spool.

    queue list [--json]           every message, its recipients and state
    queue show ID [--json]        envelope, delivery state and headers
    queue retry ID | --all        due now
    queue hold ID                 delivery skips it until released
    queue release ID              back to the queue, due now
    queue delete ID               removed without any notification
    queue bounce ID               every open recipient fails; a DSN follows

Changes happen under the message's lock (spool.locked), replace the state
file atomically, and send the id to the delivery process (spool.notify),
which re-reads that entry into its index, sends any DSN and removes
finished entries. Times in JSON are Unix seconds;
next_attempt is null when the message is due now. An unknown id is an error
(exit status 1). Message bodies are never printed, only headers.
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from tlsrelay.cli import common
from tlsrelay.cli.main import CommandError
from tlsrelay.relay import spool as spool_mod
from tlsrelay.relay.delivery.content import SpooledContent
from tlsrelay.smtp import client

BOUNCED_BY_OPERATOR = "554 5.0.0 Returned to the sender by the postmaster"
# `queue show` prints at most this much of a header block.
MAX_SHOWN_HEADER = 1024 * 1024


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("queue", help="inspect and change the mail queue")
    sub = parser.add_subparsers(dest="queue_command", metavar="ACTION", required=True)

    p = sub.add_parser("list", help="list queued messages")
    common.add_json_flag(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="show one message")
    p.add_argument("id", metavar="ID")
    common.add_json_flag(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("retry", help="try delivery now")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("id", metavar="ID", nargs="?")
    target.add_argument("--all", action="store_true", help="every queued message")
    p.set_defaults(func=cmd_retry)

    for name, func, text in (
        ("hold", cmd_hold, "keep a message from delivery"),
        ("release", cmd_release, "return a held message to the queue"),
        ("delete", cmd_delete, "remove a message without notice"),
        ("bounce", cmd_bounce, "fail every open recipient and notify the sender"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("id", metavar="ID")
        p.set_defaults(func=func)


def _spool(args: argparse.Namespace) -> spool_mod.Spool:
    settings = common.settings(args)
    spool = spool_mod.Spool(settings.spool.path)
    if not spool.queue_dir.is_dir():
        raise CommandError(f"no spool at {spool.path}")
    return spool


def _entry(spool: spool_mod.Spool, queue_id: str) -> spool_mod.Entry:
    try:
        return spool.entry(queue_id)
    except (spool_mod.NoSuchMessage, ValueError):
        raise CommandError(f"no message {queue_id} in the queue") from None


def summary(entry: spool_mod.Entry) -> dict[str, Any]:
    """One message as `queue list --json` prints it."""
    state = entry.state
    return {
        "id": entry.queue_id,
        "sender": entry.envelope.sender,
        "recipients": [
            {"address": r.address, "status": s.status, "last_error": s.last_error}
            for r, s in zip(entry.envelope.recipients, state.recipients, strict=True)
        ],
        "size": entry.size,
        "arrived": entry.envelope.arrived,
        "attempts": state.attempts,
        "next_attempt": state.next_attempt or None,
        "last_error": state.last_error,
        "queue": entry.queue_name,
    }


def _when(ts: float) -> str:
    if not ts:
        return "-"
    moment = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def cmd_list(args: argparse.Namespace) -> int:
    entries = list(_spool(args).entries())
    if args.json:
        common.print_json([summary(e) for e in entries])
        return 0
    for e in entries:
        print(
            f"{e.queue_id} {e.size:>9} {_when(e.envelope.arrived)} "
            f"{e.queue_name:<8} <{e.envelope.sender}>"
        )
        for r, s in zip(e.envelope.recipients, e.state.recipients, strict=True):
            detail = f" ({s.last_error})" if s.last_error else ""
            print(f"    <{r.address}> {s.status}{detail}")
    print(f"-- {len(entries)} message(s)")
    return 0


def _headers(spool: spool_mod.Spool, queue_id: str) -> str:
    """The header block, read in chunks up to the blank line (or a bound)."""
    _, offset, size = spool.read_envelope(queue_id)
    content = SpooledContent(spool.msg_path(queue_id), offset, size)
    head = b""
    for chunk in content.chunks(MAX_SHOWN_HEADER):
        head += chunk
        if b"\r\n\r\n" in head:
            break
    return client.header_block(head).decode("utf-8", "replace")


def cmd_show(args: argparse.Namespace) -> int:
    spool = _spool(args)
    entry = _entry(spool, args.id)
    headers = _headers(spool, entry.queue_id)
    document = {
        "id": entry.queue_id,
        "queue": entry.queue_name,
        "size": entry.size,
        "envelope": asdict(entry.envelope),
        "state": asdict(entry.state),
        "headers": headers,
    }
    if args.json:
        common.print_json(document)
        return 0
    print(json.dumps({k: v for k, v in document.items() if k != "headers"}, indent=2))
    print()
    print(headers, end="")
    return 0


def _change(
    spool: spool_mod.Spool, queue_id: str, change: Callable[[spool_mod.State], None]
) -> None:
    """Apply CHANGE to a message's state under its lock, then wake delivery."""
    _entry(spool, queue_id)
    try:
        with spool.locked(queue_id):
            entry = spool.entry(queue_id)
            change(entry.state)
            spool.write_state(queue_id, entry.state)
    except spool_mod.NoSuchMessage:
        raise CommandError(f"no message {queue_id} in the queue") from None
    spool.notify(queue_id)


def _due_now(state: spool_mod.State) -> None:
    state.next_attempt = 0.0


def cmd_retry(args: argparse.Namespace) -> int:
    spool = _spool(args)
    ids = spool.ids() if args.all else [args.id]
    for queue_id in ids:
        _change(spool, queue_id, _due_now)
    print(f"{len(ids)} message(s) due now")
    return 0


def cmd_hold(args: argparse.Namespace) -> int:
    _change(_spool(args), args.id, lambda s: setattr(s, "held", True))
    print(f"{args.id} held")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    def release(state: spool_mod.State) -> None:
        state.held = False
        state.next_attempt = 0.0

    _change(_spool(args), args.id, release)
    print(f"{args.id} released")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    spool = _spool(args)
    _entry(spool, args.id)
    try:
        with spool.locked(args.id):
            spool.remove(args.id)
    except spool_mod.NoSuchMessage:
        raise CommandError(f"no message {args.id} in the queue") from None
    spool.notify(args.id)  # delivery drops it from its index
    print(f"{args.id} deleted")
    return 0


def cmd_bounce(args: argparse.Namespace) -> int:
    def bounce(state: spool_mod.State) -> None:
        state.held = False
        state.next_attempt = 0.0
        for rs in state.recipients:
            if rs.status not in spool_mod.FINAL:
                rs.status = spool_mod.FAILED
                rs.last_error = BOUNCED_BY_OPERATOR

    _change(_spool(args), args.id, bounce)
    print(f"{args.id} returned to sender")
    return 0
