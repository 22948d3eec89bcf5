"""`tlsrelay -c FILE serve`: run the relay in the foreground.

Checks what would otherwise fail later and quietly (the spool directory
exists, the certificate, the listen addresses), brings the store and the
spool up to date (tmp/ and queue/ inside the spool directory), then hands
over to the supervisor (relay/supervisor.py), which runs the listener
workers, the delivery process and the control process until SIGTERM or
Ctrl-C. It refuses to start without a usable certificate: a relay that
cannot offer STARTTLS must not listen at all.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import socket

from tlsrelay import config
from tlsrelay.cli.common import settings as load_settings
from tlsrelay.cli.main import CommandError
from tlsrelay.relay import supervisor
from tlsrelay.relay.spool import Spool
from tlsrelay.relay.tlsio import CertificateStore, TlsConfigError

log = logging.getLogger(__name__)

# Processes besides the workers, by the name `--without` takes.
OPTIONAL = {"delivery": supervisor.DELIVERY, "control": supervisor.CONTROL}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="run the relay in the foreground")
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        choices=sorted(OPTIONAL),
        help="do not run this process here (repeatable)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    verbose = args.verbose
    logging.getLogger().setLevel(logging.DEBUG if verbose else logging.INFO)
    settings = load_settings(args)
    spool = open_spool(settings)

    try:
        CertificateStore(settings.tls.cert, settings.tls.key)
    except TlsConfigError as exc:
        log.error("cannot start: %s", exc)
        raise CommandError(f"cannot start without TLS: {exc}") from None
    for kind, address in listen_addresses(settings):
        check_free(kind, address)

    upgrade_store(settings, required=False)
    removed = spool.clean_tmp()
    if removed:
        log.info("removed %d unfinished receptions from %s", removed, spool.tmp_dir)

    workers = settings.listen.workers or len(os.sched_getaffinity(0)) or 1
    modules = [m for name, m in OPTIONAL.items() if name not in args.without]
    sup = supervisor.Supervisor(
        settings.path, workers, "DEBUG" if verbose else "INFO", modules
    )
    try:
        sup.start()
    except supervisor.StartError as exc:
        raise CommandError(f"cannot start: {exc}") from None
    print_banner(settings, workers)
    return sup.run()


def open_spool(settings: config.Settings) -> Spool:
    """The spool, with tmp/ and queue/ made inside its existing directory.

    A missing spool directory is refused, as Postfix refuses a missing
    queue_directory: creating it would hide a typo in [spool] path and
    leave the real queue unserved.
    """
    path = settings.spool.path
    if not path.is_dir():
        raise CommandError(
            f"spool directory {path} does not exist; "
            "create it with `tlsrelay init` or mkdir"
        )
    return Spool(path).create()


def listen_addresses(settings: config.Settings) -> list[tuple[str, str]]:
    return [("submission", a) for a in settings.listen.submission] + [
        ("smtps", a) for a in settings.listen.smtps
    ]


def check_free(kind: str, address: str) -> None:
    """Fail clearly if another program (or another relay) holds ADDRESS."""
    host, port = config.parse_hostport(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CommandError(
                    f"cannot listen on {address} ({kind}): already in use"
                ) from None
            raise CommandError(
                f"cannot listen on {address} ({kind}): {exc.strerror}"
            ) from None


def upgrade_store(settings: config.Settings, required: bool = True) -> None:
    """Create or migrate the control store when the control plane is installed.

    With REQUIRED false (serve), an unreachable store is only a warning: the
    listeners serve from the last snapshot and the control process retries.
    """
    try:
        db = importlib.import_module("tlsrelay.control.db")
        errors = importlib.import_module("tlsrelay.control.errors")
    except ModuleNotFoundError as exc:
        if exc.name not in ("tlsrelay.control.db", "tlsrelay.control.errors"):
            raise
        log.warning("control plane not installed; store not checked")
        return
    try:
        db.upgrade(settings)
    except errors.StoreUnavailable as exc:
        if required:
            raise CommandError(str(exc)) from None
        log.warning("%s; starting anyway, the last snapshot stays in force", exc)


def print_banner(settings: config.Settings, workers: int) -> None:
    lines = [f"tlsrelay {settings.node.name} ({settings.node.hostname}) is running"]
    for address in settings.listen.submission:
        lines.append(f"  submission  {address}  (STARTTLS required)")
    for address in settings.listen.smtps:
        lines.append(f"  smtps       {address}  (implicit TLS)")
    if settings.portal.listen:
        lines.append(f"  portal      http://{settings.portal.listen}/")
    lines.append(f"  {workers} listener worker(s), spool {settings.spool.path}")
    location = settings.node.location.upper()
    lines.append(
        f"Allow a client: tlsrelay -c {settings.path} allow add {location} 127.0.0.1"
    )
    if settings.listen.submission:
        host, port = config.parse_hostport(settings.listen.submission[0])
        lines.append(
            f"Send a message: swaks --server {host}:{port} -tls "
            "--from you@example.com --to someone@example.net"
        )
    print("\n".join(lines), flush=True)
