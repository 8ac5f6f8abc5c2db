"""The schema as SQLAlchemy Core tables. Alembic migrations create it; a test checks they agree."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TS = sa.DateTime(timezone=True)

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("webhook_secret", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    # After a rotation the old secret keeps signing (a second signature) until this time.
    sa.Column("previous_webhook_secret", sa.Text, nullable=True),
    sa.Column("previous_secret_expires_at", TS, nullable=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text, sa.ForeignKey("tenants.tenant_id"), nullable=False),
    sa.Column("service", sa.Text, nullable=False),
    # sha256 of the key: keys are 256-bit random, so a fast hash is enough (no brute force).
    sa.Column("key_hash", sa.LargeBinary, nullable=False, unique=True),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("revoked_at", TS, nullable=True),
)

templates = sa.Table(
    "templates",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("default_locale", sa.Text, nullable=False),
    sa.Column("active_version", sa.Integer, nullable=True),
    sa.Column("latest_version", sa.Integer, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.Column("row_version", sa.Integer, nullable=False),
)

template_versions = sa.Table(
    "template_versions",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    # [{"name", "type", "required"}]
    sa.Column("variables", JSONB, nullable=False),
    # {locale: {channel: {field: source}}}: a version is read and written whole.
    sa.Column("contents", JSONB, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.ForeignKeyConstraint(
        ["tenant_id", "name"], ["templates.tenant_id", "templates.name"], ondelete="CASCADE"
    ),
)

recipients = sa.Table(
    "recipients",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("email", sa.Text, nullable=True),
    sa.Column("phone", sa.Text, nullable=True),
    # [{"platform", "token", "added_at", "invalidated_at"}]
    sa.Column("devices", JSONB, nullable=False),
    # {"url", "secret", "disabled_at"} or NULL
    sa.Column("webhook", JSONB, nullable=True),
    sa.Column("locale", sa.Text, nullable=False),
    sa.Column("time_zone", sa.Text, nullable=False),
    # {"channels": [...], "marketing_opt_out", "quiet_hours", "caps": [...]}
    sa.Column("preferences", JSONB, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
)

categories = sa.Table(
    "categories",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("per_hour_cap", sa.Integer, nullable=False),
    sa.Column("per_day_cap", sa.Integer, nullable=False),
    sa.Column("cap_action", sa.Text, nullable=False),
    # NULL: the service's default window.
    sa.Column("dedup_window_seconds", sa.Integer, nullable=True),
    sa.Column("updated_at", TS, nullable=False),
)

# A request folded into an earlier notification with the same content (duplicate detection):
# its request_id stays bound to that notification, so its retries get the same answer.
request_aliases = sa.Table(
    "request_aliases",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("request_id", sa.Text, primary_key=True),
    sa.Column("request_fingerprint", sa.Text, nullable=False),
    sa.Column("notification_id", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
)

bulk_jobs = sa.Table(
    "bulk_jobs",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("job_id", sa.Text, primary_key=True),
    sa.Column("caller_service", sa.Text, nullable=False),
    # The call that created the job; every call (this one too) is in bulk_job_calls.
    sa.Column("request_id", sa.Text, nullable=False),
    sa.Column("request_fingerprint", sa.Text, nullable=False),
    sa.Column("channel", sa.Text, nullable=False, server_default=""),
    sa.Column("category", sa.Text, nullable=False, server_default=""),
    sa.Column("state", sa.Text, nullable=False, server_default="RUNNING"),
    sa.Column("call_count", sa.Integer, nullable=False, server_default="1"),
    # Recipients named over all calls: also the next call's first position.
    sa.Column("recipient_count", sa.Integer, nullable=False),
    sa.Column("accepted_count", sa.Integer, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.Column("cancelled_at", TS, nullable=True),
    sa.UniqueConstraint("tenant_id", "request_id"),
)

# One row per BulkSend call: its request_id makes the call idempotent, whichever job it added to.
bulk_job_calls = sa.Table(
    "bulk_job_calls",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("request_id", sa.Text, primary_key=True),
    sa.Column("job_id", sa.Text, nullable=False),
    sa.Column("request_fingerprint", sa.Text, nullable=False),
    sa.Column("first_position", sa.Integer, nullable=False),
    sa.Column("recipient_count", sa.Integer, nullable=False),
    sa.Column("created_at", TS, nullable=False),
)

# What became of each recipient of a job, refused ones included (they have no notification).
bulk_job_recipients = sa.Table(
    "bulk_job_recipients",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("job_id", sa.Text, primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("request_id", sa.Text, nullable=False),
    sa.Column("call_index", sa.Integer, nullable=False),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("notification_id", sa.Text, nullable=True),
    sa.Column("deduplicated", sa.Boolean, nullable=False),
    sa.Column("refusal_code", sa.Text, nullable=True),
    sa.Column("refusal_field", sa.Text, nullable=True),
    sa.Column("refusal_description", sa.Text, nullable=True),
)

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("caller_service", sa.Text, nullable=False),
    sa.Column("request_id", sa.Text, nullable=False),
    sa.Column("request_fingerprint", sa.Text, nullable=False),
    sa.Column("bulk_job_id", sa.Text, nullable=True),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("priority", sa.SmallInteger, nullable=False),
    sa.Column("category", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("html", sa.Text, nullable=False, server_default=""),
    sa.Column("data", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("content_hash", sa.Text, nullable=False, server_default=""),
    sa.Column("erased_at", TS, nullable=True),
    sa.Column("address_kind", sa.Text, nullable=True),
    sa.Column("address_value", sa.Text, nullable=True),
    sa.Column("template_name", sa.Text, nullable=False),
    sa.Column("template_version", sa.Integer, nullable=False),
    sa.Column("locale", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("status_reason", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.Column("due_at", TS, nullable=False),
    sa.Column("scheduled_at", TS, nullable=True),
    sa.Column("expires_at", TS, nullable=True),
    sa.Column("metadata", JSONB, nullable=False),
    # History and attempts live on the row: every transition is then one single-row write.
    sa.Column("history", JSONB, nullable=False),
    sa.Column("attempts", JSONB, nullable=False),
    # The rest of the fallback chain: [{"channel", "address_kind", "address_value", "title",
    # "body", "html", "data"}]
    sa.Column("fallbacks", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    # {"OPENED": iso time, ...}: the first time of each action the recipient took.
    sa.Column("engagements", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    # For statistics: the provider of the latest attempt on its channel that named one (the
    # one that accepted it, else the one that failed it), and when a provider accepted it.
    sa.Column("provider", sa.Text, nullable=True),
    sa.Column("sent_at", TS, nullable=True),
    # A cancel that reached it while it was being sent or dead-lettered: never cleared.
    sa.Column("cancel_requested_at", TS, nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.UniqueConstraint("tenant_id", "request_id"),
    # ListNotifications pages newest first by (created_at, id), within the tenant or within one
    # of its selective filters; each index serves one filter with no sort.
    sa.Index("ix_notifications_tenant_created", "tenant_id", "created_at", "id"),
    sa.Index("ix_notifications_tenant_user_created", "tenant_id", "user_id", "created_at", "id"),
    sa.Index("ix_notifications_tenant_status_created", "tenant_id", "status", "created_at", "id"),
    sa.Index(
        "ix_notifications_tenant_category_created", "tenant_id", "category", "created_at", "id"
    ),
    sa.Index(
        "ix_notifications_tenant_caller_created",
        "tenant_id",
        "caller_service",
        "created_at",
        "id",
    ),
    sa.Index("ix_notifications_tenant_channel_created", "tenant_id", "channel", "created_at", "id"),
    sa.Index(
        "ix_notifications_tenant_priority_created", "tenant_id", "priority", "created_at", "id"
    ),
    sa.Index(
        "ix_notifications_bulk_job",
        "tenant_id",
        "bulk_job_id",
        postgresql_where=sa.text("bulk_job_id IS NOT NULL"),
    ),
    # Frequency caps count a recipient's notifications of a category around a due time.
    sa.Index("ix_notifications_caps", "tenant_id", "user_id", "category", "due_at"),
    sa.Index(
        "ix_notifications_unread",
        "tenant_id",
        "user_id",
        postgresql_where=sa.text("channel = 'IN_APP' AND status = 'DELIVERED'"),
    ),
    sa.Index(
        "ix_notifications_in_flight",
        "id",
        postgresql_where=sa.text("status IN ('QUEUED', 'SENDING')"),
    ),
    sa.Index(
        "ix_notifications_dead_letters",
        "tenant_id",
        sa.text("updated_at DESC"),
        sa.text("id DESC"),
        postgresql_where=sa.text("status = 'FAILED'"),
    ),
)

# Addresses a provider said must not be sent to again (an SMS number that replied STOP).
address_suppressions = sa.Table(
    "address_suppressions",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("address_kind", sa.Text, primary_key=True),
    sa.Column("address_value", sa.Text, primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
)

# The in-app inbox's change log, per user. The head row is locked by each append until its
# transaction commits, so seqs commit in order and "after seq N" never skips a late commit.
inbox_heads = sa.Table(
    "inbox_heads",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
)

inbox_events = sa.Table(
    "inbox_events",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("notification_id", sa.Text, nullable=False),
    sa.Column("read_ids", JSONB, nullable=False),
    sa.Column("unread_count", sa.Integer, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Index("ix_inbox_events_created_at", "created_at"),
)
