"""A fresh control store for tests, on SQLite or PostgreSQL (H3's helpers).

PostgreSQL is the server at 127.0.0.1:5432 (trust auth, database `test`);
each use gets its own schema, dropped afterwards. A PostgreSQL that is down
FAILS the test, never skips it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tlsrelay.control import db

PG_USERS = ("postgres", "root")


def _pg_connect() -> tuple[psycopg.Connection, str]:
    errors = []
    for user in PG_USERS:
        try:
            conn = psycopg.connect(
                host="127.0.0.1",
                port=5432,
                dbname="test",
                user=user,
                autocommit=True,
                connect_timeout=5,
            )
            return conn, user
        except psycopg.OperationalError as exc:
            errors.append(f"{user}: {exc}")
    pytest.fail(
        "PostgreSQL at 127.0.0.1:5432 (database test) is not reachable; start it "
        "with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main "
        f"start`: {errors}"
    )


@contextmanager
def fresh_store(backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty store on BACKEND ("sqlite" or "postgresql")."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/control.db"
        yield url
        db.dispose(url)
        return
    conn, user = _pg_connect()
    schema = f"tlsrelay_t_{secrets.token_hex(6)}"
    conn.execute(f'CREATE SCHEMA "{schema}"')
    url = (
        f"postgresql+psycopg://{user}@127.0.0.1:5432/test"
        f"?options=-csearch_path%3D{schema}"
    )
    try:
        yield url
    finally:
        db.dispose(url)
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        conn.close()


def write_config(directory: Path, store: str, **sections: dict) -> Path:
    """A config file in DIRECTORY for location LON with STORE as its store."""
    tables = {
        "node": {"name": "lon-1", "location": "LON", "hostname": "lon-1.test"},
        "store": {"url": store},
        "control": {"provider_domain": "relay.example"},
    }
    for name, values in sections.items():
        tables.setdefault(name, {}).update(values)
    lines = []
    for name, values in tables.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml(value)}")
        lines.append("")
    path = directory / "tlsrelay.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def seed_accounts(settings, passwords: tuple[str, ...] = ()) -> dict:
    """Customers A and B, one user each, a staff user, and their API tokens.

    Returns {"alice": token, "bob": token, "carol": token} (alice is customer
    A's, bob customer B's, carol is staff). Users named in PASSWORDS get the
    password "<name>-password" (argon2 is slow on purpose, so only on demand).
    """
    from tlsrelay.control import accounts

    tokens = {}
    with db.transaction(settings) as session:
        accounts.add_customer(session, "acme", "ops@acme.test")
        accounts.add_customer(session, "bravo", "ops@bravo.test")
        for name, role, customer in (
            ("alice", "customer", "acme"),
            ("bob", "customer", "bravo"),
            ("carol", "staff", None),
        ):
            _, tokens[name] = accounts.add_user(session, name, role, customer)
            if name in passwords:
                accounts.set_password(session, name, f"{name}-password")
    return tokens
