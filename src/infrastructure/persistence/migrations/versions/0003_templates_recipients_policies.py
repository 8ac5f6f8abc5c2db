"""Versioned per-channel templates, the recipient directory, categories, duplicate aliases,
and the notification columns they need (rendered HTML and data, content hash, erasure).

Existing templates become versions of the new shape: their title and body serve every channel,
their variables are inferred from the source (type ANY, required, as the old renderer required
every variable it used), the newest version is active, and the old default locale ('') becomes
"en" (or "und" when "en" was also present); a template without one defaults to a locale it has.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from alembic import op
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _variables(*sources: str) -> list[dict[str, Any]]:
    env = ImmutableSandboxedEnvironment()
    names: set[str] = set()
    for source in sources:
        names |= meta.find_undeclared_variables(env.parse(source))
    return [{"name": n, "type": "ANY", "required": True} for n in sorted(names)]


def _channels(title: str, body: str) -> dict[str, dict[str, Any]]:
    return {
        "EMAIL": {"subject": title, "html": "", "text": body},
        "SMS": {"text": body},
        "PUSH": {"title": title, "body": body, "data": {}},
        "IN_APP": {"title": title, "body": body},
        "WEBHOOK": {"payload": {"title": title, "body": body}},
    }


def _create_new_tables() -> None:
    op.create_table(
        "templates_v2",
        sa.Column("tenant_id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("default_locale", sa.Text, nullable=False),
        sa.Column("active_version", sa.Integer, nullable=True),
        sa.Column("latest_version", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("row_version", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name", name="pk_templates_v2"),
    )
    op.create_table(
        "template_versions",
        sa.Column("tenant_id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("variables", JSONB, nullable=False),
        sa.Column("contents", JSONB, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name", "version", name="pk_template_versions"),
    )


def _migrate_templates() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT tenant_id, name, version, locale, title, body, created_at FROM templates "
            "ORDER BY tenant_id, name, version, locale"
        )
    ).mappings()
    grouped: dict[tuple[str, str], dict[int, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        grouped[(r["tenant_id"], r["name"])][r["version"]].append(r)
    for (tenant_id, name), versions in grouped.items():
        locales = {r["locale"] for rs in versions.values() for r in rs}
        # Without a default row, the default must be a locale that has content.
        default = ("und" if "en" in locales else "en") if "" in locales else min(locales)
        newest = max(versions)
        created = min(r["created_at"] for rs in versions.values() for r in rs)
        updated = max(r["created_at"] for r in versions[newest])
        conn.execute(
            sa.text("INSERT INTO templates_v2 VALUES (:t, :n, '', :d, :a, :a, :c, :u, 1)"),
            {"t": tenant_id, "n": name, "d": default, "a": newest, "c": created, "u": updated},
        )
        for version, rs in versions.items():
            contents = {(r["locale"] or default): _channels(r["title"], r["body"]) for r in rs}
            variables = _variables(*(s for r in rs for s in (r["title"], r["body"])))
            conn.execute(
                sa.text(
                    "INSERT INTO template_versions VALUES "
                    "(:t, :n, :v, :s, CAST(:vars AS jsonb), CAST(:c AS jsonb), :at, 'migration')"
                ),
                {
                    "t": tenant_id,
                    "n": name,
                    "v": version,
                    "s": "ACTIVE" if version == newest else "INACTIVE",
                    "vars": json.dumps(variables),
                    "c": json.dumps(contents),
                    "at": rs[0]["created_at"],
                },
            )


def upgrade() -> None:
    _create_new_tables()
    _migrate_templates()
    op.drop_table("templates")
    op.rename_table("templates_v2", "templates")
    op.execute("ALTER TABLE templates RENAME CONSTRAINT pk_templates_v2 TO pk_templates")
    op.create_foreign_key(
        "fk_template_versions_tenant_id_templates",
        "template_versions",
        "templates",
        ["tenant_id", "name"],
        ["tenant_id", "name"],
        ondelete="CASCADE",
    )
    op.create_table(
        "recipients",
        sa.Column("tenant_id", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("email", sa.Text, nullable=True),
        sa.Column("phone", sa.Text, nullable=True),
        sa.Column("devices", JSONB, nullable=False),
        sa.Column("webhook", JSONB, nullable=True),
        sa.Column("locale", sa.Text, nullable=False),
        sa.Column("time_zone", sa.Text, nullable=False),
        sa.Column("preferences", JSONB, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "user_id", name="pk_recipients"),
    )
    op.create_table(
        "categories",
        sa.Column("tenant_id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("per_hour_cap", sa.Integer, nullable=False),
        sa.Column("per_day_cap", sa.Integer, nullable=False),
        sa.Column("cap_action", sa.Text, nullable=False),
        sa.Column("dedup_window_seconds", sa.Integer, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name", name="pk_categories"),
    )
    op.create_table(
        "request_aliases",
        sa.Column("tenant_id", sa.Text, primary_key=True),
        sa.Column("request_id", sa.Text, primary_key=True),
        sa.Column("request_fingerprint", sa.Text, nullable=False),
        sa.Column("notification_id", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "request_id", name="pk_request_aliases"),
    )
    op.add_column("notifications", sa.Column("html", sa.Text, nullable=False, server_default=""))
    op.add_column(
        "notifications",
        sa.Column("data", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    )
    op.add_column(
        "notifications", sa.Column("content_hash", sa.Text, nullable=False, server_default="")
    )
    op.add_column("notifications", sa.Column("erased_at", TS, nullable=True))
    op.create_index(
        "ix_notifications_caps",
        "notifications",
        ["tenant_id", "user_id", "category", "due_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_caps", table_name="notifications")
    for column in ("erased_at", "content_hash", "data", "html"):
        op.drop_column("notifications", column)
    op.drop_table("request_aliases")
    op.drop_table("categories")
    op.drop_table("recipients")
    # Back to one row per locale of each version, title and body from the in-app content.
    op.create_table(
        "templates_v1",
        sa.Column("tenant_id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("locale", sa.Text, primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name", "version", "locale", name="pk_templates_v1"),
    )
    op.execute(
        """
        INSERT INTO templates_v1
        SELECT v.tenant_id, v.name, v.version,
               CASE WHEN c.key = t.default_locale THEN '' ELSE c.key END,
               COALESCE(c.value -> 'IN_APP' ->> 'title', ''),
               COALESCE(c.value -> 'IN_APP' ->> 'body', ''),
               v.created_at
        FROM template_versions v
        JOIN templates t USING (tenant_id, name)
        CROSS JOIN LATERAL jsonb_each(v.contents) AS c
        """
    )
    op.drop_table("template_versions")
    op.drop_table("templates")
    op.rename_table("templates_v1", "templates")
    op.execute("ALTER TABLE templates RENAME CONSTRAINT pk_templates_v1 TO pk_templates")
