"""SqlTemplateRepository on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta

import pytest

from application.errors import ConcurrentUpdate
from application.principal import Principal
from application.use_cases.templates import TemplateDraft, UpdateTemplate
from domain.template import (
    EmailContent,
    InAppContent,
    LocalizedContent,
    PushContent,
    SmsContent,
    Template,
    TemplateVersionContent,
    VariableDeclaration,
    VariableType,
    VersionState,
    WebhookContent,
)
from infrastructure.clock import SystemClock
from infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from infrastructure.templates import JinjaTemplateEngine

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
EVERY_CHANNEL = TemplateVersionContent(
    (
        VariableDeclaration("name", VariableType.STRING),
        VariableDeclaration("n", VariableType.INTEGER, required=False),
    ),
    (
        LocalizedContent(
            "en",
            email=EmailContent("S {{ name }}", "<p>{{ name }}</p>", "T"),
            sms=SmsContent("sms"),
            push=PushContent("t", "b", {"k": "{{ name }}"}),
            in_app=InAppContent("t", "b"),
            webhook=WebhookContent({"a": ["{{ name }}", 1.5, True, None], "b": {"c": "d"}}),
        ),
        LocalizedContent("zh-Hant-TW", in_app=InAppContent("標題", "內容")),
    ),
)


def new_template(name: str = "welcome", tenant: str = "tenant-a") -> Template:
    template, _ = Template.create(
        tenant_id=tenant,
        name=name,
        description="d",
        default_locale="en",
        content=EVERY_CHANNEL,
        now=T0,
        created_by="svc",
    )
    return template


async def add(uow: SqlUnitOfWorkFactory, template: Template) -> bool:
    async with uow() as u:
        added = await u.templates.add(template)
        await u.commit()
    return added


async def test_a_version_round_trips_with_every_channel(uow: SqlUnitOfWorkFactory) -> None:
    assert await add(uow, new_template())
    async with uow() as u:
        template = await u.templates.get("tenant-a", "welcome")
        version = await u.templates.get_version("tenant-a", "welcome", 1)
    assert template is not None
    assert version is not None
    assert (template.description, template.default_locale, template.row_version) == ("d", "en", 1)
    assert (template.created_at, template.latest_version, template.active_version) == (T0, 1, None)
    assert version.content == EVERY_CHANNEL
    assert (version.state, version.created_by, version.created_at) == (
        VersionState.DRAFT,
        "svc",
        T0,
    )


async def test_a_taken_name_is_not_added_and_tenants_are_apart(uow: SqlUnitOfWorkFactory) -> None:
    assert await add(uow, new_template())
    assert not await add(uow, new_template())
    assert await add(uow, new_template(tenant="tenant-b"))
    async with uow() as u:
        assert await u.templates.get("tenant-c", "welcome") is None
        assert await u.templates.get_version("tenant-c", "welcome", 1) is None
        assert await u.templates.get_active("tenant-c", "welcome") is None


async def test_save_writes_new_versions_and_state_changes(uow: SqlUnitOfWorkFactory) -> None:
    await add(uow, new_template())
    later = T0 + timedelta(hours=1)
    async with uow() as u:
        template = await u.templates.get("tenant-a", "welcome", for_update=True)
        assert template is not None
        template.activate(1, later)
        await u.templates.save(template)
        template.add_version(EVERY_CHANNEL, later, "other")
        template.activate(2, later)
        await u.templates.save(template)
        await u.commit()
    async with uow() as u:
        active = await u.templates.get_active("tenant-a", "welcome")
        v1 = await u.templates.get_version("tenant-a", "welcome", 1)
    assert active is not None
    stored, version = active
    assert (stored.active_version, stored.latest_version, stored.row_version) == (2, 2, 3)
    assert stored.updated_at == later
    assert version is not None
    assert (version.version, version.state, version.created_by) == (
        2,
        VersionState.ACTIVE,
        "other",
    )
    assert v1 is not None
    assert v1.state is VersionState.INACTIVE


async def test_get_active_without_an_active_version(uow: SqlUnitOfWorkFactory) -> None:
    await add(uow, new_template())
    async with uow() as u:
        found = await u.templates.get_active("tenant-a", "welcome")
    assert found is not None
    assert found[0].name == "welcome"
    assert found[1] is None


async def test_save_is_a_compare_and_set(uow: SqlUnitOfWorkFactory) -> None:
    await add(uow, new_template())
    async with uow() as u:
        template = await u.templates.get("tenant-a", "welcome")
    assert template is not None
    stale = copy.deepcopy(template)
    async with uow() as u:
        template.activate(1, T0)
        await u.templates.save(template)
        await u.commit()
    async with uow() as u:
        stale.add_version(EVERY_CHANNEL, T0, "svc")
        with pytest.raises(ConcurrentUpdate):
            await u.templates.save(stale)
    async with uow() as u:
        assert await u.templates.get_version("tenant-a", "welcome", 2) is None


async def test_list_pages_by_name(uow: SqlUnitOfWorkFactory) -> None:
    for name in ("b", "a", "c"):
        await add(uow, new_template(name))
    await add(uow, new_template("a0", tenant="tenant-b"))
    async with uow() as u:
        first = await u.templates.list("tenant-a", "", 2)
        rest = await u.templates.list("tenant-a", "b", 2)
    assert [t.name for t in first] == ["a", "b"]
    assert [t.name for t in rest] == ["c"]


async def test_concurrent_updates_never_collide_on_version_numbers(
    uow: SqlUnitOfWorkFactory,
) -> None:
    await add(uow, new_template())
    update = UpdateTemplate(uow, JinjaTemplateEngine(), SystemClock())
    principal = Principal("tenant-a", "svc")
    results = await asyncio.gather(
        *(update.execute(principal, TemplateDraft("welcome", EVERY_CHANNEL)) for _ in range(5))
    )
    assert sorted(r.version.version for r in results) == [2, 3, 4, 5, 6]
    async with uow() as u:
        template = await u.templates.get("tenant-a", "welcome")
    assert template is not None
    assert template.latest_version == 6
