"""Postfix config trees for the customer-tool tests.

`debian_tree` copies Debian's packaged main.cf and master.cf into a temp
etc/ directory, so postconf and postmap run against what a Debian customer
has; `rhel_tree` does the same with the CentOS 7 style main.cf kept in
fixtures/. Tests write main.cf lines of a case directly (a customer's
hand edits); only `client setup` itself must go through postconf.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from support.tools import need

FIXTURES = Path(__file__).parent / "fixtures"
DEBIAN_MAIN_CF = Path("/usr/share/postfix/main.cf.debian")
DEBIAN_MASTER_CF = Path("/usr/share/postfix/master.cf.dist")


def backdate(path: Path, seconds: float = 10.0) -> None:
    """Make PATH look older: Postfix rereads a main.cf changed within the
    last second until it stops changing, which costs ~2 s per command."""
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


class Tree:
    """One config directory: helpers to write lines and build tables."""

    def __init__(self, etc: Path) -> None:
        self.etc = etc

    @property
    def main_cf(self) -> Path:
        return self.etc / "main.cf"

    def append(self, *lines: str) -> int:
        """Append main.cf lines; returns the line number of the first."""
        text = self.main_cf.read_text()
        if text and not text.endswith("\n"):
            text += "\n"
        first = text.count("\n") + 1
        self.main_cf.write_text(text + "".join(f"{line}\n" for line in lines))
        backdate(self.main_cf)
        return first

    def line_of(self, prefix: str) -> int:
        for number, line in enumerate(self.main_cf.read_text().splitlines(), 1):
            if line.startswith(prefix):
                return number
        raise AssertionError(f"{prefix!r} not in {self.main_cf}")

    def write_map(self, name: str, *lines: str, compile: bool = True) -> Path:
        path = self.etc / name
        path.write_text("".join(f"{line}\n" for line in lines))
        backdate(path, 20.0)
        if compile:
            postmap = need("postmap")
            subprocess.run([postmap, "-c", str(self.etc), f"hash:{path}"], check=True)
        return path


def _tree(base: Path, main_cf: Path) -> Tree:
    need("postconf")
    etc = base / "etc"
    etc.mkdir()
    shutil.copy(main_cf, etc / "main.cf")
    shutil.copy(DEBIAN_MASTER_CF, etc / "master.cf")
    tree = Tree(etc)
    # Debian's installer writes myhostname; without it Postfix asks DNS.
    tree.append("myhostname = mail.example.com")
    return tree


@pytest.fixture
def debian_tree(tmp_path: Path) -> Tree:
    return _tree(tmp_path, DEBIAN_MAIN_CF)


@pytest.fixture
def rhel_tree(tmp_path: Path) -> Tree:
    return _tree(tmp_path, FIXTURES / "rhel7-main.cf")
