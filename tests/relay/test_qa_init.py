"""Faults found by QA (H9) in `tlsrelay init`, each pinned by a test.

- The config that `init` wrote was world-readable (0644) although it holds
  `[portal] secret`, which signs portal sessions and CSRF tokens; the SQLite
  store, with password and token hashes, was 0644 too.  Postfix keeps such
  things (sasl_passwd, TLS keys) readable by their owner only.
"""

from __future__ import annotations

import stat
import subprocess
import sys


def test_init_writes_config_and_store_for_the_owner_only(tmp_path):
    var = tmp_path / "var"
    result = subprocess.run(
        [sys.executable, "-m", "tlsrelay.cli.main", "init", str(var)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for name in ("tlsrelay.toml", "control.db", "key.pem"):
        mode = stat.S_IMODE((var / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {mode:o}"
