"""Indexes for listing dead letters and for the reconciler's scan of unsettled notifications.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_notifications_in_flight_due", table_name="notifications")
    op.create_index(
        "ix_notifications_in_flight",
        "notifications",
        ["id"],
        postgresql_where=sa.text("status IN ('QUEUED', 'SENDING')"),
    )
    op.create_index(
        "ix_notifications_dead_letters",
        "notifications",
        ["tenant_id", sa.text("updated_at DESC"), sa.text("id DESC")],
        postgresql_where=sa.text("status = 'FAILED'"),
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_dead_letters", table_name="notifications")
    op.drop_index("ix_notifications_in_flight", table_name="notifications")
    op.create_index(
        "ix_notifications_in_flight_due",
        "notifications",
        ["due_at"],
        postgresql_where=sa.text("status IN ('QUEUED', 'SENDING')"),
    )
