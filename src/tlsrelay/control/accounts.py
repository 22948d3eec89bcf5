"""Customers, users, passwords, API tokens and portal sessions.

Passwords are stored as argon2id hashes (argon2-cffi). API tokens and portal
session ids are 256-bit random strings; the store keeps only their SHA-256,
so a leaked database grants no access. A token is shown once, when made.

An Actor is who is acting: a customer user (sees only its customer's
objects), a staff user, or the operator at the command line (staff).
Nothing here logs a password, token or session id.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tlsrelay.control import db
from tlsrelay.control.errors import Conflict, Invalid, NotFound

SESSION_LIFETIME = dt.timedelta(hours=12)
MIN_PASSWORD_LENGTH = 10

_hasher = PasswordHasher()
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


@dataclass(frozen=True)
class Actor:
    name: str
    role: str
    customer_id: int | None = None
    user_id: int | None = None

    @property
    def is_staff(self) -> bool:
        return self.role == db.ROLE_STAFF


def operator(name: str) -> Actor:
    """The person at the command line: staff powers, named for the audit log."""
    return Actor(name=name, role=db.ROLE_STAFF)


def actor_of(user: db.User) -> Actor:
    return Actor(user.name, user.role, user.customer_id, user.id)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_name(kind: str, name: str) -> None:
    if not _NAME.match(name):
        raise Invalid(
            f"{kind} name {name!r} must be 1 to 64 letters, digits or ._@- "
            "and start with a letter or digit"
        )


# -- customers ----------------------------------------------------------------


def add_customer(
    session: Session, name: str, email: str, webhook_url: str | None = None
) -> tuple[db.Customer, str | None]:
    """A new customer, and the webhook secret if a webhook was given."""
    check_name("customer", name)
    if not _EMAIL.match(email):
        raise Invalid(
            f"contact e-mail {email!r} is not an address like ops@example.com"
        )
    if webhook_url and not re.match(r"^https?://[^\s]+$", webhook_url):
        raise Invalid(f"webhook {webhook_url!r} must be an http:// or https:// URL")
    if session.scalar(select(db.Customer).where(db.Customer.name == name)):
        raise Conflict(f"customer {name!r} exists already")
    secret = secrets.token_urlsafe(32) if webhook_url else None
    customer = db.Customer(
        name=name,
        email=email,
        webhook_url=webhook_url or None,
        webhook_secret=secret,
        created_at=db.utcnow(),
    )
    session.add(customer)
    session.flush()
    return customer, secret


def customer_by_name(session: Session, name: str) -> db.Customer:
    customer = session.scalar(select(db.Customer).where(db.Customer.name == name))
    if customer is None:
        raise NotFound(f"no customer named {name!r}")
    return customer


def customer_json(customer: db.Customer) -> dict:
    return {
        "id": customer.id,
        "name": customer.name,
        "email": customer.email,
        "webhook_url": customer.webhook_url,
    }


# -- users, passwords, tokens -------------------------------------------------


def add_user(
    session: Session, name: str, role: str, customer_name: str | None
) -> tuple[db.User, str]:
    """A new user and its first API token (returned once, stored hashed)."""
    check_name("user", name)
    if role not in (db.ROLE_CUSTOMER, db.ROLE_STAFF):
        raise Invalid(f"role must be customer or staff, not {role!r}")
    if role == db.ROLE_CUSTOMER and not customer_name:
        raise Invalid("a customer user needs --customer NAME")
    if role == db.ROLE_STAFF and customer_name:
        raise Invalid("a staff user belongs to no customer; drop --customer")
    if session.scalar(select(db.User).where(db.User.name == name)):
        raise Conflict(f"user {name!r} exists already")
    customer = customer_by_name(session, customer_name) if customer_name else None
    user = db.User(
        name=name,
        role=role,
        customer_id=customer.id if customer else None,
        created_at=db.utcnow(),
    )
    session.add(user)
    session.flush()
    return user, new_token(session, user)


def new_token(session: Session, user: db.User) -> str:
    token = "tlsr_" + secrets.token_urlsafe(32)
    session.add(
        db.ApiToken(user_id=user.id, token_hash=_digest(token), created_at=db.utcnow())
    )
    return token


def user_by_name(session: Session, name: str) -> db.User:
    user = session.scalar(select(db.User).where(db.User.name == name))
    if user is None:
        raise NotFound(f"no user named {name!r}")
    return user


def set_password(session: Session, name: str, password: str) -> db.User:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Invalid(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
    user = user_by_name(session, name)
    user.password_hash = _hasher.hash(password)
    # A new password ends every portal session of the user.
    session.execute(delete(db.PortalSession).where(db.PortalSession.user_id == user.id))
    return user


def authenticate_password(session: Session, name: str, password: str) -> Actor | None:
    user = session.scalar(select(db.User).where(db.User.name == name))
    if user is None or not user.password_hash:
        # Spend the same effort as a real check, so timing tells nothing.
        _hasher.hash(password)
        return None
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return actor_of(user)


def authenticate_token(session: Session, token: str) -> Actor | None:
    row = session.scalar(
        select(db.ApiToken).where(db.ApiToken.token_hash == _digest(token))
    )
    if row is None:
        return None
    user = session.get(db.User, row.user_id)
    return actor_of(user) if user else None


# -- portal sessions ----------------------------------------------------------


def new_session(session: Session, actor: Actor | None) -> str:
    """A fresh session id (for an anonymous visitor or right after login)."""
    sid = secrets.token_urlsafe(32)
    now = db.utcnow()
    session.add(
        db.PortalSession(
            id_hash=_digest(sid),
            user_id=actor.user_id if actor else None,
            created_at=now,
            expires_at=now + SESSION_LIFETIME,
        )
    )
    return sid


def end_session(session: Session, sid: str) -> None:
    session.execute(
        delete(db.PortalSession).where(db.PortalSession.id_hash == _digest(sid))
    )


def session_actor(session: Session, sid: str) -> tuple[bool, Actor | None]:
    """(known, actor): known is False for a missing or expired session id."""
    row = session.get(db.PortalSession, _digest(sid))
    if row is None or row.expires_at <= db.utcnow():
        return False, None
    if row.user_id is None:
        return True, None
    user = session.get(db.User, row.user_id)
    return True, actor_of(user) if user else None


def csrf_token(secret: str, sid: str) -> str:
    """The form token bound to one session (HMAC of its id)."""
    return hmac.new(secret.encode(), sid.encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: str, sid: str, token: str) -> bool:
    return hmac.compare_digest(csrf_token(secret, sid), token or "")
