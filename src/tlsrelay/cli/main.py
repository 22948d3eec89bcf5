"""The `tlsrelay` command: global options, then one module per command group.

Each module in GROUPS defines `register(subparsers)`, which adds its
sub-command(s) and sets `func` to a callable taking the parsed arguments and
returning the exit status. Modules stay thin: they parse, call the parts in
relay/, control/ and client/, and print. Errors the user can fix are raised
as CommandError and printed as one line, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from tlsrelay import __version__
from tlsrelay.config import ConfigError

# One module per command group, in the order `--help` lists them.
GROUPS = (
    "init",
    "serve",
    "allow",
    "queue",
    "customer",
    "user",
    "request",
    "db",
    "client",
    "probe",
)


class CommandError(Exception):
    """A failure the user can act on; printed as `tlsrelay: MESSAGE`."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlsrelay", description="TLS-only SMTP relay and its control plane."
    )
    parser.add_argument(
        "-c",
        "--config",
        default="tlsrelay.toml",
        metavar="FILE",
        help="config file (default: ./tlsrelay.toml)",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output"
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in GROUPS:
        importlib.import_module(f"tlsrelay.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * args.verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except CommandError as exc:
        print(f"tlsrelay: {exc}", file=sys.stderr)
        return exc.status
    except ConfigError as exc:
        print(f"tlsrelay: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
