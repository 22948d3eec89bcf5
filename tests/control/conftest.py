"""Fixtures for the control plane: every store test runs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.store import fresh_store, write_config
from tlsrelay import config
from tlsrelay.control import db


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path: Path) -> Iterator[str]:
    with fresh_store(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def config_path(tmp_path: Path, store_url: str) -> Path:
    return write_config(tmp_path, store_url)


@pytest.fixture
def settings(config_path: Path) -> config.Settings:
    s = config.load(config_path)
    db.upgrade(s)
    return s
