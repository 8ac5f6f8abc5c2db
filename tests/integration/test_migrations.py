"""The Alembic migrations against a real PostgreSQL: they build exactly the schema tables.py
describes, and they can be undone and redone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from infrastructure.embedded import EmbeddedPostgres
from infrastructure.persistence.migrations_runner import (
    MIGRATIONS_DIR,
    alembic_config,
    upgrade_to_head,
)
from infrastructure.persistence.tables import metadata

pytestmark = pytest.mark.integration

APP_TABLES = {
    "tenants",
    "api_keys",
    "templates",
    "template_versions",
    "recipients",
    "categories",
    "request_aliases",
    "bulk_jobs",
    "bulk_job_calls",
    "bulk_job_recipients",
    "notifications",
    "address_suppressions",
    "inbox_heads",
    "inbox_events",
}


# The newest migration, read from the scripts (so adding a migration does not break this file).
HEAD = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def schema_diff(url: str) -> list[Any]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def inspect(url: str) -> tuple[set[str], str | None, dict[str, dict[str, Any]]]:
    """Table names, the Alembic revision, and each notifications index by name."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            insp = sa.inspect(conn)
            tables = set(insp.get_table_names())
            revision = MigrationContext.configure(conn).get_current_revision()
            indexes = (
                {ix["name"]: dict(ix) for ix in insp.get_indexes("notifications")}
                if "notifications" in tables
                else {}
            )
        return tables, revision, indexes
    finally:
        engine.dispose()


@pytest.fixture
def scratch_url(embedded_postgres: EmbeddedPostgres) -> Iterator[str]:
    """A brand-new empty database on the embedded server, dropped afterwards."""
    name = f"scratch_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(embedded_postgres.uri("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield embedded_postgres.sqlalchemy_url(name)
    finally:
        with psycopg.connect(embedded_postgres.uri("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_migrated_schema_matches_the_table_metadata(database_url: str) -> None:
    assert schema_diff(database_url) == []
    tables, revision, indexes = inspect(database_url)
    assert tables >= APP_TABLES
    assert revision == HEAD
    # compare_metadata does not look at partial-index predicates: check them here.
    unread = indexes["ix_notifications_unread"]
    in_flight = indexes["ix_notifications_in_flight"]
    dead_letters = indexes["ix_notifications_dead_letters"]
    assert unread["column_names"] == ["tenant_id", "user_id"]
    assert "IN_APP" in unread["dialect_options"]["postgresql_where"]
    assert "DELIVERED" in unread["dialect_options"]["postgresql_where"]
    assert in_flight["column_names"] == ["id"]
    assert "QUEUED" in in_flight["dialect_options"]["postgresql_where"]
    assert "SENDING" in in_flight["dialect_options"]["postgresql_where"]
    assert dead_letters["column_names"][0] == "tenant_id"
    assert "FAILED" in dead_letters["dialect_options"]["postgresql_where"]


def test_downgrade_to_base_then_upgrade_to_head_on_a_scratch_database(scratch_url: str) -> None:
    assert inspect(scratch_url)[0] == set()

    upgrade_to_head(scratch_url)
    tables, revision, _ = inspect(scratch_url)
    assert tables == APP_TABLES | {"alembic_version"}
    assert revision == HEAD
    assert schema_diff(scratch_url) == []

    command.downgrade(alembic_config(scratch_url), "base")
    tables, revision, _ = inspect(scratch_url)
    assert tables == {"alembic_version"}
    assert revision is None

    upgrade_to_head(scratch_url)
    tables, revision, indexes = inspect(scratch_url)
    assert tables == APP_TABLES | {"alembic_version"}
    assert revision == HEAD
    assert schema_diff(scratch_url) == []
    assert {
        "ix_notifications_tenant_user_created",
        "ix_notifications_unread",
        "ix_notifications_in_flight",
        "ix_notifications_dead_letters",
    } <= set(indexes)


def test_the_comparison_notices_drift(scratch_url: str) -> None:
    """Guards the first test: an empty diff must mean agreement, not a blind comparison."""
    upgrade_to_head(scratch_url)
    engine = sa.create_engine(scratch_url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE templates ADD COLUMN extra text"))
            conn.execute(sa.text("ALTER TABLE notifications ALTER COLUMN category DROP NOT NULL"))
            conn.execute(sa.text("DROP INDEX ix_notifications_unread"))
    finally:
        engine.dispose()
    diff = schema_diff(scratch_url)
    kinds = {entry[0] if isinstance(entry, tuple) else entry[0][0] for entry in diff}
    assert {"remove_column", "modify_nullable", "add_index"} <= kinds


def test_upgrade_to_head_is_idempotent(scratch_url: str) -> None:
    upgrade_to_head(scratch_url)
    upgrade_to_head(scratch_url)
    tables, revision, _ = inspect(scratch_url)
    assert tables == APP_TABLES | {"alembic_version"}
    assert revision == HEAD
