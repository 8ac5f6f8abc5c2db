"""Migration 0003 turns old one-row-per-locale templates into versioned per-channel ones that
the new repository reads and the renderer sends."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
import pytest
from alembic import command

from domain.notification import Channel, TemplateRef
from domain.template import VariableDeclaration, VariableType, VersionState
from infrastructure.embedded import EmbeddedPostgres
from infrastructure.persistence.engine import create_engine
from infrastructure.persistence.migrations_runner import alembic_config, upgrade_to_head
from infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from infrastructure.templates import JinjaTemplateEngine, JinjaTemplateRenderer

pytestmark = pytest.mark.integration

T1 = datetime(2025, 1, 1, tzinfo=UTC)
T2 = datetime(2025, 2, 1, tzinfo=UTC)
OLD_ROWS = [
    # tenant, name, version, locale ('' was the default), title, body, created_at
    ("acme", "welcome", 1, "", "Hi {{ name }}", "v1 body", T1),
    ("acme", "welcome", 2, "", "Welcome, {{ name }}!", "Order {{ order }}", T2),
    ("acme", "welcome", 2, "de", "Willkommen, {{ name }}!", "Bestellung {{ order }}", T2),
    ("acme", "both", 1, "", "Default", "d", T1),
    ("acme", "both", 1, "en", "English", "e", T1),
]


@pytest.fixture
async def old_database(embedded_postgres: EmbeddedPostgres) -> AsyncIterator[str]:
    """A fresh database at revision 0002 holding old-style templates, then upgraded to head."""
    name = f"tplmig_{uuid.uuid4().hex[:12]}"
    admin = embedded_postgres.uri("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = embedded_postgres.sqlalchemy_url(name)
    try:
        await asyncio.to_thread(command.upgrade, alembic_config(url), "0002")
        with psycopg.connect(embedded_postgres.uri(name)) as conn:
            conn.cursor().executemany(
                "INSERT INTO templates (tenant_id, name, version, locale, title, body, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                OLD_ROWS,
            )
        await asyncio.to_thread(upgrade_to_head, url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_old_templates_are_read_and_sent_through_the_new_model(old_database: str) -> None:
    engine = create_engine(old_database, pool_size=2)
    try:
        uow = SqlUnitOfWorkFactory(engine)
        async with uow() as u:
            welcome = await u.templates.get("acme", "welcome")
            v1 = await u.templates.get_version("acme", "welcome", 1)
            v2 = await u.templates.get_version("acme", "welcome", 2)
            both = await u.templates.get("acme", "both")
        assert welcome is not None
        assert v1 is not None
        assert v2 is not None
        assert both is not None
        assert (welcome.default_locale, welcome.active_version, welcome.latest_version) == (
            "en",
            2,
            2,
        )
        assert (welcome.created_at, welcome.updated_at) == (T1, T2)
        assert (v1.state, v2.state) == (VersionState.INACTIVE, VersionState.ACTIVE)
        assert v2.created_by == "migration"
        assert set(v2.content.variables) == {
            VariableDeclaration("name", VariableType.ANY, True),
            VariableDeclaration("order", VariableType.ANY, True),
        }
        de = v2.content.localized("de")
        assert de is not None
        assert de.email is not None
        assert de.in_app is not None
        assert (de.email.subject, de.email.text) == (
            "Willkommen, {{ name }}!",
            "Bestellung {{ order }}",
        )
        assert de.in_app.title == "Willkommen, {{ name }}!"
        # "" and "en" both existed: the old default cannot become "en".
        assert both.default_locale == "und"

        renderer = JinjaTemplateRenderer(uow, JinjaTemplateEngine(), cache_seconds=0)
        variables = {"name": "Ada", "order": 7}
        german = await renderer.render(
            "acme", TemplateRef("welcome", variables, "de-CH"), Channel.IN_APP
        )
        assert (german.template_version, german.locale) == (2, "de")
        assert (german.content.title, german.content.body) == ("Willkommen, Ada!", "Bestellung 7")
        default = await renderer.render(
            "acme", TemplateRef("welcome", variables, "fr"), Channel.SMS
        )
        assert (default.locale, default.content.body) == ("en", "Order 7")
    finally:
        await engine.dispose()
