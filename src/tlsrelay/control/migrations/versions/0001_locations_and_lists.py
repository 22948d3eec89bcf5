"""Locations, filtering-list entries and the change counter.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "store_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "locations",
        sa.Column("code", sa.String(16), primary_key=True),
        sa.Column("relay_host", sa.String(255), nullable=False),
    )
    op.create_table(
        "list_entries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "location", sa.String(16), sa.ForeignKey("locations.code"), nullable=False
        ),
        sa.Column("network", sa.String(64), nullable=False),
        sa.Column("added_by", sa.String(255), nullable=False),
        sa.Column("added_at", sa.DateTime, nullable=False),
        sa.Column("request_id", sa.Integer, nullable=True),
        sa.UniqueConstraint("location", "network"),
    )


def downgrade() -> None:
    op.drop_table("list_entries")
    op.drop_table("locations")
    op.drop_table("store_state")
