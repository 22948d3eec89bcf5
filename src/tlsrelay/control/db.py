"""The control store: SQLAlchemy 2 models, engines and migrations.

The store holds locations, filtering-list entries, customers, users and their
API tokens, servers, enablement requests, portal sessions and the audit log.
SQLite (one machine) and PostgreSQL (many nodes) are both first-class; the
URL comes from `[store] url`, a relative SQLite path being relative to the
config file (`config.store_url`).

Migrations are Alembic scripts inside this package (control/migrations/),
run programmatically by `upgrade(settings)`: no alembic.ini is needed. Every
write that changes what a relay must answer (list entries, pending requests)
also bumps the single-row `store_state.version` in the same transaction, so
the control process learns of a change by reading one integer.

This module never logs secrets: the store URL is logged without password,
and password and token hashes never leave the models.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import (
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.types import TypeDecorator

from tlsrelay import config
from tlsrelay.control.errors import StoreUnavailable

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"

# Request statuses.
PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
REVOKED = "revoked"
STATUSES = (PENDING, APPROVED, REJECTED, REVOKED)

ROLE_CUSTOMER = "customer"
ROLE_STAFF = "staff"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator):
    """A timestamp stored as naive UTC and always returned timezone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    pass


class StoreState(Base):
    """One row: a counter bumped by every change that relays must see."""

    __tablename__ = "store_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)


class Location(Base):
    __tablename__ = "locations"
    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    relay_host: Mapped[str] = mapped_column(String(255))


class ListEntry(Base):
    """A network allowed to relay through a location."""

    __tablename__ = "list_entries"
    __table_args__ = (UniqueConstraint("location", "network"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    location: Mapped[str] = mapped_column(ForeignKey("locations.code"))
    network: Mapped[str] = mapped_column(String(64))
    added_by: Mapped[str] = mapped_column(String(255))
    added_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    request_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    email: Mapped[str] = mapped_column(String(320))
    webhook_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    webhook_secret: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id"), nullable=True
    )
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiToken(Base):
    """An API token, kept only as its SHA-256 (tokens are 256 random bits)."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class PortalSession(Base):
    """A portal login; the cookie carries the id, rotated at every login."""

    __tablename__ = "portal_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Server(Base):
    __tablename__ = "servers"
    __table_args__ = (UniqueConstraint("customer_id", "main_ip"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    location: Mapped[str] = mapped_column(ForeignKey("locations.code"))
    main_ip: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Request(Base):
    """An enablement request: the ticket's fields, its status and decision."""

    __tablename__ = "requests"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id"))
    location: Mapped[str] = mapped_column(ForeignKey("locations.code"))
    relay_host: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    note: Mapped[str] = mapped_column(Text, default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    submitted_by: Mapped[str] = mapped_column(String(255))
    submitted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RequestIp(Base):
    """One network of a request; the server's main IP comes first (position 0)."""

    __tablename__ = "request_ips"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"))
    position: Mapped[int] = mapped_column(Integer)
    network: Mapped[str] = mapped_column(String(64))


class AuditRecord(Base):
    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255))
    detail: Mapped[str] = mapped_column(Text, default="")


# -- engines ----------------------------------------------------------------

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.close()


def engine_for_url(url: str) -> Engine:
    """One engine per URL per process (engines pool their connections)."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _create_engine(url)
            _engines[url] = engine
        return engine


def _create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 15})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})


def dispose(url: str) -> None:
    """Close the pooled connections of URL's engine (tests, shutdown)."""
    with _engines_lock:
        engine = _engines.pop(url, None)
    _upgraded.discard(url)
    if engine is not None:
        engine.dispose()


def engine(settings: config.Settings) -> Engine:
    return engine_for_url(config.store_url(settings))


def safe_url(url: str) -> str:
    """The URL with any password masked, for log lines and messages."""
    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def transaction(settings: config.Settings) -> Iterator[Session]:
    """A session in one transaction: committed on success, else rolled back.

    A store that cannot be reached raises StoreUnavailable (URL without
    password, driver message), never the driver's own exception.
    """
    try:
        with Session(engine(settings), expire_on_commit=False) as session:
            with session.begin():
                yield session
    except (OperationalError, InterfaceError) as exc:
        raise _unavailable(settings, exc) from None


def _unavailable(settings: config.Settings, exc: DBAPIError) -> StoreUnavailable:
    reason = str(exc.orig or exc).strip().splitlines()[0]
    url = safe_url(config.store_url(settings))
    return StoreUnavailable(f"store {url} unavailable: {reason}")


def bump_version(session: Session) -> None:
    """Mark that relays must re-read the lists (same transaction as the change)."""
    session.execute(update(StoreState).values(version=StoreState.version + 1))


def read_version(session: Session) -> int:
    return session.execute(select(StoreState.version)).scalar_one()


def read_version_of(settings: config.Settings) -> int:
    with transaction(settings) as session:
        return read_version(session)


# -- migrations -------------------------------------------------------------

_upgraded: set[str] = set()


def upgrade(settings: config.Settings) -> None:
    """Create or migrate the store to the newest schema and seed locations."""
    # Alembic's INFO lines ("setup plugin ...", logged while its modules
    # are imported) drown serve's start-up output.
    alembic_log = logging.getLogger("alembic")
    if alembic_log.level == logging.NOTSET:
        alembic_log.setLevel(logging.WARNING)
    from alembic import command
    from alembic.config import Config

    url = config.store_url(settings)
    eng = engine_for_url(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with eng.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
    except (OperationalError, InterfaceError) as exc:
        raise _unavailable(settings, exc) from None
    with transaction(settings) as session:
        _seed_locations(session, settings)
    _upgraded.add(url)
    log.info("store %s is at the newest schema", safe_url(url))


def ensure(settings: config.Settings) -> None:
    """Upgrade once per process before first use of the store."""
    if config.store_url(settings) not in _upgraded:
        upgrade(settings)


def _seed_locations(session: Session, settings: config.Settings) -> None:
    existing = {loc.code: loc for loc in session.scalars(select(Location))}
    changed = False
    for code in (c.upper() for c in settings.control.locations):
        host = settings.relay_host(code)
        loc = existing.get(code)
        if loc is None:
            session.add(Location(code=code, relay_host=host))
            changed = True
        elif loc.relay_host != host:
            loc.relay_host = host
            changed = True
    if session.get(StoreState, 1) is None:
        session.add(StoreState(id=1, version=1))
    elif changed:
        bump_version(session)


def audit(
    session: Session, actor: str, action: str, subject: str, detail: str = ""
) -> AuditRecord:
    """Record who did what to which object, in the caller's transaction."""
    record = AuditRecord(
        at=utcnow(), actor=actor, action=action, subject=subject, detail=detail
    )
    session.add(record)
    return record
