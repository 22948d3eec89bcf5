"""`serve` refuses a missing spool directory instead of creating it.

QA: `[spool] path = "/nonexistent/dir/spool"` was created silently (mkdir
-p), so a typo in the path orphaned the real queue.  Postfix refuses a
missing queue_directory; so does `serve` now.  `init` still creates it, and
serve still makes tmp/ and queue/ inside an existing spool directory.
"""

from __future__ import annotations

import pytest

from tlsrelay import config
from tlsrelay.cli import serve
from tlsrelay.cli.main import CommandError, main


def write_config(tmp_path, spool: str):
    path = tmp_path / "tlsrelay.toml"
    path.write_text(
        '[node]\nname = "lon-1"\nlocation = "LON"\nhostname = "lon-1.test"\n'
        f'[tls]\ncert = "none.pem"\nkey = "none.pem"\n[spool]\npath = "{spool}"\n'
    )
    return path


def test_serve_refuses_a_missing_spool_directory(tmp_path, capsys):
    missing = tmp_path / "nonexistent" / "dir" / "spool"
    cfg = write_config(tmp_path, str(missing))
    assert main(["-c", str(cfg), "serve"]) != 0
    err = capsys.readouterr().err
    assert f"spool directory {missing} does not exist" in err
    assert "tlsrelay init" in err
    assert not (tmp_path / "nonexistent").exists()


def test_existing_spool_directory_gets_its_subdirectories(tmp_path):
    (tmp_path / "spool").mkdir()
    settings = config.load(write_config(tmp_path, "spool"))
    spool = serve.open_spool(settings)
    assert spool.tmp_dir.is_dir() and spool.queue_dir.is_dir()


def test_open_spool_refuses_a_relative_typo(tmp_path):
    (tmp_path / "spool").mkdir()
    settings = config.load(write_config(tmp_path, "spoll"))
    with pytest.raises(CommandError, match="does not exist"):
        serve.open_spool(settings)
    assert not (tmp_path / "spoll").exists()
