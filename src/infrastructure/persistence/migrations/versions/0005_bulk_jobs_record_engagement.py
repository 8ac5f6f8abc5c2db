"""Bulk jobs that grow and cancel, the listing indexes, engagement and per-provider statistics.

Jobs made before this revision get their recipients back from their notifications: one row per
notification of the job, at the position its request_id names (a bulk call derived each
recipient's request_id as "<call's request_id>#<index>"; a job then had a single call, so the
index is the position). Recipients such a job refused got no notification and were never
stored: they cannot be recovered. Those jobs list only their accepted recipients (with gaps in
the positions), count none refused, and keep recipient_count as the number they were sent.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Jobs are named per tenant now (a caller may choose the id).
    op.drop_constraint("pk_bulk_jobs", "bulk_jobs", type_="primary")
    op.create_primary_key("pk_bulk_jobs", "bulk_jobs", ["tenant_id", "job_id"])
    op.add_column("bulk_jobs", sa.Column("channel", sa.Text, nullable=False, server_default=""))
    op.add_column("bulk_jobs", sa.Column("category", sa.Text, nullable=False, server_default=""))
    op.add_column(
        "bulk_jobs", sa.Column("state", sa.Text, nullable=False, server_default="RUNNING")
    )
    op.add_column(
        "bulk_jobs", sa.Column("call_count", sa.Integer, nullable=False, server_default="1")
    )
    op.add_column("bulk_jobs", sa.Column("updated_at", TS, nullable=True))
    op.add_column("bulk_jobs", sa.Column("cancelled_at", TS, nullable=True))
    op.execute("UPDATE bulk_jobs SET updated_at = created_at")
    op.alter_column("bulk_jobs", "updated_at", nullable=False)
    # Earlier jobs take channel and category from their notifications.
    op.execute(
        """
        UPDATE bulk_jobs j SET channel = n.channel, category = n.category
        FROM (SELECT DISTINCT ON (tenant_id, bulk_job_id) tenant_id, bulk_job_id, channel,
                     category
              FROM notifications WHERE bulk_job_id IS NOT NULL) n
        WHERE n.tenant_id = j.tenant_id AND n.bulk_job_id = j.job_id
        """
    )

    op.create_table(
        "bulk_job_calls",
        sa.Column("tenant_id", sa.Text),
        sa.Column("request_id", sa.Text),
        sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("request_fingerprint", sa.Text, nullable=False),
        sa.Column("first_position", sa.Integer, nullable=False),
        sa.Column("recipient_count", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "request_id", name="pk_bulk_job_calls"),
    )
    op.execute(
        """
        INSERT INTO bulk_job_calls (tenant_id, request_id, job_id, request_fingerprint,
                                    first_position, recipient_count, created_at)
        SELECT tenant_id, request_id, job_id, request_fingerprint, 0, recipient_count, created_at
        FROM bulk_jobs
        """
    )
    op.create_table(
        "bulk_job_recipients",
        sa.Column("tenant_id", sa.Text),
        sa.Column("job_id", sa.Text),
        sa.Column("position", sa.Integer),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("call_index", sa.Integer, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("notification_id", sa.Text, nullable=True),
        sa.Column("deduplicated", sa.Boolean, nullable=False),
        sa.Column("refusal_code", sa.Text, nullable=True),
        sa.Column("refusal_field", sa.Text, nullable=True),
        sa.Column("refusal_description", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "job_id", "position", name="pk_bulk_job_recipients"),
    )
    # Earlier jobs: a recipient per notification (see the module docstring for the refused).
    op.execute(
        """
        INSERT INTO bulk_job_recipients (tenant_id, job_id, position, request_id, call_index,
                                         user_id, notification_id, deduplicated)
        SELECT tenant_id, job_id, position, call_request_id, position, user_id, id, false
        FROM (SELECT n.tenant_id, j.job_id, j.request_id AS call_request_id, n.user_id, n.id,
                     CASE WHEN left(n.request_id, length(j.request_id) + 1) = j.request_id || '#'
                               AND substr(n.request_id, length(j.request_id) + 2) ~ '^[0-9]{1,9}$'
                          THEN substr(n.request_id, length(j.request_id) + 2)::integer
                     END AS position
              FROM bulk_jobs j
              JOIN notifications n ON n.tenant_id = j.tenant_id AND n.bulk_job_id = j.job_id) r
        WHERE position IS NOT NULL
        ON CONFLICT DO NOTHING
        """
    )

    op.add_column(
        "notifications",
        sa.Column("engagements", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    )
    op.add_column("notifications", sa.Column("provider", sa.Text, nullable=True))
    op.add_column("notifications", sa.Column("sent_at", TS, nullable=True))
    op.add_column("notifications", sa.Column("cancel_requested_at", TS, nullable=True))
    # Notifications already tried: the provider of the latest attempt on their channel that
    # named one (who accepted it, else who failed it); those sent: when it was accepted.
    op.execute(
        """
        UPDATE notifications n
        SET provider = (SELECT a.value->>'provider'
                        FROM jsonb_array_elements(n.attempts) WITH ORDINALITY AS a(value, i)
                        WHERE a.value->>'provider' <> ''
                          AND coalesce(a.value->>'channel', '') IN ('', n.channel)
                        ORDER BY a.i DESC LIMIT 1),
            sent_at = CASE WHEN n.status IN ('SENT', 'DELIVERED', 'READ') THEN
                          (SELECT (a.value->>'end')::timestamptz
                           FROM jsonb_array_elements(n.attempts) WITH ORDINALITY AS a(value, i)
                           WHERE a.value->>'outcome' = 'ACCEPTED'
                           ORDER BY a.i DESC LIMIT 1)
                      END
        WHERE n.attempts <> '[]'::jsonb
        """
    )
    op.drop_index("ix_notifications_tenant_user_created", table_name="notifications")
    for name, column in (
        ("ix_notifications_tenant_created", None),
        ("ix_notifications_tenant_user_created", "user_id"),
        ("ix_notifications_tenant_status_created", "status"),
        ("ix_notifications_tenant_category_created", "category"),
        ("ix_notifications_tenant_caller_created", "caller_service"),
        ("ix_notifications_tenant_channel_created", "channel"),
        ("ix_notifications_tenant_priority_created", "priority"),
    ):
        columns = ["tenant_id", *([column] if column else []), "created_at", "id"]
        op.create_index(name, "notifications", columns)
    op.create_index(
        "ix_notifications_bulk_job",
        "notifications",
        ["tenant_id", "bulk_job_id"],
        postgresql_where=sa.text("bulk_job_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_bulk_job", table_name="notifications")
    for name in (
        "ix_notifications_tenant_priority_created",
        "ix_notifications_tenant_channel_created",
        "ix_notifications_tenant_caller_created",
        "ix_notifications_tenant_category_created",
        "ix_notifications_tenant_status_created",
        "ix_notifications_tenant_user_created",
        "ix_notifications_tenant_created",
    ):
        op.drop_index(name, table_name="notifications")
    op.create_index(
        "ix_notifications_tenant_user_created",
        "notifications",
        ["tenant_id", "user_id", "created_at"],
    )
    for column in ("cancel_requested_at", "sent_at", "provider", "engagements"):
        op.drop_column("notifications", column)
    op.drop_table("bulk_job_recipients")
    op.drop_table("bulk_job_calls")
    for column in ("cancelled_at", "updated_at", "call_count", "state", "category", "channel"):
        op.drop_column("bulk_jobs", column)
    op.drop_constraint("pk_bulk_jobs", "bulk_jobs", type_="primary")
    op.create_primary_key("pk_bulk_jobs", "bulk_jobs", ["job_id"])
