"""Finding the external programs that interop tests drive.

A missing tool is a failure, never a skip: `make test` installs every tool
(scripts/install-deps.sh), so a missing one means the set-up is broken.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SBIN = ("/usr/sbin", "/usr/lib/postfix/sbin")


def need(command: str) -> str:
    """Absolute path of COMMAND, or fail the test naming the package to install."""
    found = shutil.which(command)
    if not found:
        for d in SBIN:
            candidate = Path(d) / command
            if candidate.exists():
                found = str(candidate)
                break
    if not found:
        pytest.fail(f"{command} is not installed; run `make deps` (as root)")
    return found
