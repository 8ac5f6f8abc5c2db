"""Fallback chains, address suppressions, tenant secret rotation and the in-app inbox log.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column(
        "notifications",
        sa.Column("fallbacks", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    )
    op.add_column("tenants", sa.Column("previous_webhook_secret", sa.Text, nullable=True))
    op.add_column("tenants", sa.Column("previous_secret_expires_at", TS, nullable=True))
    op.create_table(
        "address_suppressions",
        sa.Column("tenant_id", sa.Text),
        sa.Column("address_kind", sa.Text),
        sa.Column("address_value", sa.Text),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "address_kind", "address_value", name="pk_address_suppressions"
        ),
    )
    op.create_table(
        "inbox_heads",
        sa.Column("tenant_id", sa.Text),
        sa.Column("user_id", sa.Text),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "user_id", name="pk_inbox_heads"),
    )
    op.create_table(
        "inbox_events",
        sa.Column("tenant_id", sa.Text),
        sa.Column("user_id", sa.Text),
        sa.Column("seq", sa.BigInteger),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("notification_id", sa.Text, nullable=False),
        sa.Column("read_ids", JSONB, nullable=False),
        sa.Column("unread_count", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "user_id", "seq", name="pk_inbox_events"),
    )
    op.create_index("ix_inbox_events_created_at", "inbox_events", ["created_at"])


def downgrade() -> None:
    op.drop_table("inbox_events")
    op.drop_table("inbox_heads")
    op.drop_table("address_suppressions")
    op.drop_column("tenants", "previous_secret_expires_at")
    op.drop_column("tenants", "previous_webhook_secret")
    op.drop_column("notifications", "fallbacks")
