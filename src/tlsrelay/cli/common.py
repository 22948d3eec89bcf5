"""Helpers shared by the command modules: loading settings, printing."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tlsrelay import config


def settings(args: argparse.Namespace) -> config.Settings:
    return config.load(args.config)


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document for scripts"
    )


def print_json(document: Any) -> None:
    json.dump(document, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")
