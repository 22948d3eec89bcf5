"""Customers, users, API tokens, portal sessions, servers, requests, audit.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer, primary_key=True)


def _created() -> sa.Column:
    return sa.Column("created_at", sa.DateTime, nullable=False)


def upgrade() -> None:
    op.create_table(
        "customers",
        _id(),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("webhook_url", sa.String(2048)),
        sa.Column("webhook_secret", sa.String(255)),
        _created(),
    )
    op.create_table(
        "users",
        _id(),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id")),
        sa.Column("password_hash", sa.String(255)),
        _created(),
    )
    op.create_table(
        "api_tokens",
        _id(),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        _created(),
    )
    op.create_table(
        "portal_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id")),
        _created(),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "servers",
        _id(),
        sa.Column(
            "customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False
        ),
        sa.Column(
            "location", sa.String(16), sa.ForeignKey("locations.code"), nullable=False
        ),
        sa.Column("main_ip", sa.String(64), nullable=False),
        _created(),
        sa.UniqueConstraint("customer_id", "main_ip"),
    )
    op.create_table(
        "requests",
        _id(),
        sa.Column(
            "customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False
        ),
        sa.Column("server_id", sa.Integer, sa.ForeignKey("servers.id"), nullable=False),
        sa.Column(
            "location", sa.String(16), sa.ForeignKey("locations.code"), nullable=False
        ),
        sa.Column("relay_host", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("submitted_by", sa.String(255), nullable=False),
        sa.Column("submitted_at", sa.DateTime, nullable=False),
        sa.Column("decided_by", sa.String(255)),
        sa.Column("decided_at", sa.DateTime),
    )
    op.create_index("ix_requests_status", "requests", ["status"])
    op.create_table(
        "request_ips",
        _id(),
        sa.Column(
            "request_id", sa.Integer, sa.ForeignKey("requests.id"), nullable=False
        ),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("network", sa.String(64), nullable=False),
    )
    op.create_table(
        "audit",
        _id(),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "audit",
        "request_ips",
        "requests",
        "servers",
        "portal_sessions",
        "api_tokens",
        "users",
        "customers",
    ):
        op.drop_table(table)
