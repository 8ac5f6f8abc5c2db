"""TemplateService's use cases over in-memory fakes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from application.errors import AlreadyExists
from application.principal import Principal
from application.use_cases.templates import (
    ActivateTemplateVersion,
    CreateTemplate,
    DeactivateTemplate,
    GetTemplate,
    ListTemplates,
    RenderRequest,
    RenderTemplate,
    TemplateDraft,
    UpdateTemplate,
)
from domain.errors import FieldViolation, NotFound, PreconditionFailed, ValidationFailed
from domain.notification import Channel, Content
from domain.template import (
    ChannelContent,
    InAppContent,
    LocalizedContent,
    SmsContent,
    TemplateVersionContent,
    VariableDeclaration,
    VariableType,
    VersionState,
)
from tests.unit.application.fakes import FakeUnitOfWorkFactory, FixedClock

ALICE = Principal("tenant-a", "orders")
BOB = Principal("tenant-b", "billing")


class FakeEngine:
    """Renders ``{name}`` placeholders; refuses sources listed in ``bad``."""

    def __init__(self) -> None:
        self.bad: set[str] = set()
        self.checked = 0

    async def check(self, content: TemplateVersionContent) -> None:
        self.checked += 1
        refused = [FieldViolation(s.path, "bad") for s in content.sources() if s.text in self.bad]
        if refused:
            raise ValidationFailed(refused)

    async def render(
        self, content: ChannelContent, values: Mapping[str, Any], template_field: str
    ) -> Content:
        assert isinstance(content, InAppContent | SmsContent)
        if isinstance(content, SmsContent):
            return Content("", content.text.format_map(values))
        return Content(content.title.format_map(values), content.body.format_map(values))


def version(*localized: LocalizedContent, required: bool = True) -> TemplateVersionContent:
    return TemplateVersionContent(
        (VariableDeclaration("name", VariableType.STRING, required),), localized
    )


EN = LocalizedContent("en", in_app=InAppContent("Hi {name}", "en body"))
DE = LocalizedContent("de", in_app=InAppContent("Hallo {name}", "de body"))


def draft(name: str = "welcome", *localized: LocalizedContent, **kw: Any) -> TemplateDraft:
    return TemplateDraft(
        name=name,
        content=version(*(localized or (EN,))),
        description=kw.pop("description", "greets"),
        default_locale=kw.pop("default_locale", "en"),
        **kw,
    )


class Service:
    def __init__(self) -> None:
        self.uow = FakeUnitOfWorkFactory()
        self.clock = FixedClock()
        self.engine = FakeEngine()
        self.create = CreateTemplate(self.uow, self.engine, self.clock)
        self.update = UpdateTemplate(self.uow, self.engine, self.clock)
        self.get = GetTemplate(self.uow)
        self.list = ListTemplates(self.uow)
        self.activate = ActivateTemplateVersion(self.uow, self.clock)
        self.deactivate = DeactivateTemplate(self.uow, self.clock)
        self.render = RenderTemplate(self.uow, self.engine)


@pytest.fixture
def svc() -> Service:
    return Service()


async def test_create_stores_version_1_as_a_draft_unless_activated(svc: Service) -> None:
    created = await svc.create.execute(ALICE, draft())
    assert (created.template.latest_version, created.template.active_version) == (1, None)
    assert created.version.state is VersionState.DRAFT
    assert created.version.created_by == "orders"
    active = await svc.create.execute(ALICE, draft("other", activate=True))
    assert active.template.active_version == 1
    assert active.version.state is VersionState.ACTIVE
    assert svc.uow.db.commits == 2


async def test_create_of_a_taken_name_is_already_exists_and_other_tenants_are_apart(
    svc: Service,
) -> None:
    await svc.create.execute(ALICE, draft())
    with pytest.raises(AlreadyExists):
        await svc.create.execute(ALICE, draft())
    assert (await svc.create.execute(BOB, draft())).template.tenant_id == "tenant-b"


async def test_a_source_the_engine_refuses_stores_nothing(svc: Service) -> None:
    svc.engine.bad.add("en body")
    with pytest.raises(ValidationFailed) as info:
        await svc.create.execute(ALICE, draft())
    assert [v.field for v in info.value.violations] == ["contents[0].in_app.body"]
    assert svc.uow.db.templates == {}


async def test_invalid_input_is_refused_before_the_engine_compiles_anything(svc: Service) -> None:
    with pytest.raises(ValidationFailed) as info:
        await svc.create.execute(ALICE, draft(default_locale="not a tag"))
    assert [v.field for v in info.value.violations] == ["default_locale"]
    await svc.create.execute(ALICE, draft())
    huge = LocalizedContent("en", sms=SmsContent("x" * (65 * 1024)))
    with pytest.raises(ValidationFailed) as info:
        await svc.update.execute(ALICE, draft("welcome", huge, default_locale=None))
    assert [v.field for v in info.value.violations] == ["contents[0].sms.text"]
    assert svc.engine.checked == 1


async def test_every_update_is_a_new_version_and_old_ones_stay_readable(svc: Service) -> None:
    await svc.create.execute(ALICE, draft(activate=True))
    svc.clock.advance(timedelta(minutes=1))
    updated = await svc.update.execute(
        ALICE, draft("welcome", EN, DE, description=None, default_locale=None)
    )
    assert updated.version.version == 2
    assert updated.template.description == "greets"  # kept
    assert updated.template.active_version == 1  # a new version is a draft
    v1 = await svc.get.execute(ALICE, "welcome", 1)
    latest = await svc.get.execute(ALICE, "welcome", 0)
    assert [c.locale for c in v1.version.content.contents] == ["en"]
    assert [c.locale for c in latest.version.content.contents] == ["en", "de"]
    assert latest.version.state is VersionState.DRAFT
    assert v1.version.state is VersionState.ACTIVE


async def test_update_and_get_of_an_unknown_template_are_not_found(svc: Service) -> None:
    with pytest.raises(NotFound):
        await svc.update.execute(ALICE, draft())
    await svc.create.execute(ALICE, draft())
    with pytest.raises(NotFound):
        await svc.get.execute(BOB, "welcome", 0)
    with pytest.raises(NotFound):
        await svc.get.execute(ALICE, "welcome", 7)


async def test_activate_switches_versions_and_deactivate_stops_sends(svc: Service) -> None:
    await svc.create.execute(ALICE, draft(activate=True))
    await svc.update.execute(ALICE, replace(draft("welcome", EN, DE), activate=True))
    v1 = await svc.get.execute(ALICE, "welcome", 1)
    assert v1.version.state is VersionState.INACTIVE
    assert v1.template.active_version == 2
    back = await svc.activate.execute(ALICE, "welcome", 1)
    assert back.active_version == 1
    assert (await svc.get.execute(ALICE, "welcome", 2)).version.state is VersionState.INACTIVE
    off = await svc.deactivate.execute(ALICE, "welcome")
    assert off.active_version is None
    assert (await svc.get.execute(ALICE, "welcome", 1)).version.state is VersionState.INACTIVE
    with pytest.raises(PreconditionFailed):
        await svc.deactivate.execute(ALICE, "welcome")
    with pytest.raises(NotFound):
        await svc.activate.execute(ALICE, "welcome", 3)


async def test_list_pages_by_name_with_an_opaque_token(svc: Service) -> None:
    for name in ("c", "a", "e", "b", "d"):
        await svc.create.execute(ALICE, draft(name))
    await svc.create.execute(BOB, draft("zz"))
    first, token = await svc.list.execute(ALICE, 2, "")
    second, token2 = await svc.list.execute(ALICE, 2, token)
    third, token3 = await svc.list.execute(ALICE, 2, token2)
    assert [t.name for t in (*first, *second, *third)] == ["a", "b", "c", "d", "e"]
    assert token3 == ""
    with pytest.raises(ValidationFailed) as info:
        await svc.list.execute(ALICE, 2, "garbage")
    assert info.value.violations[0].field == "page_token"
    with pytest.raises(ValidationFailed):
        await svc.list.execute(ALICE, 1001, "")


async def test_render_previews_a_draft_and_defaults_to_the_active_version(svc: Service) -> None:
    await svc.create.execute(ALICE, draft(activate=True))
    await svc.update.execute(ALICE, draft("welcome", EN, DE, default_locale=None))
    active = await svc.render.execute(
        ALICE, RenderRequest("welcome", Channel.IN_APP, 0, "de-CH", {"name": "Ada"})
    )
    assert (active.template_version, active.locale, active.content.title) == (1, "en", "Hi Ada")
    preview = await svc.render.execute(
        ALICE, RenderRequest("welcome", Channel.IN_APP, 2, "de-CH", {"name": "Ada"})
    )
    assert (preview.template_version, preview.locale) == (2, "de")
    assert preview.content.title == "Hallo Ada"


async def test_render_names_preview_fields(svc: Service) -> None:
    await svc.create.execute(ALICE, draft())
    with pytest.raises(PreconditionFailed) as inactive:
        await svc.render.execute(ALICE, RenderRequest("welcome", Channel.IN_APP))
    assert inactive.value.reason == "TEMPLATE_INACTIVE"
    cases = [
        (RenderRequest("welcome", Channel.IN_APP, 1), "variables.name"),
        (RenderRequest("welcome", Channel.IN_APP, 1, "!!", {"name": "x"}), "locale"),
        (RenderRequest("welcome", None, 1), "channel"),
        (RenderRequest("welcome", Channel.IN_APP, 1, "", {"name": 1}), "variables.name"),
    ]
    for request, field in cases:
        with pytest.raises(ValidationFailed) as info:
            await svc.render.execute(ALICE, request)
        assert [v.field for v in info.value.violations] == [field]
    with pytest.raises(PreconditionFailed) as no_sms:
        await svc.render.execute(ALICE, RenderRequest("welcome", Channel.SMS, 1, "", {"name": "x"}))
    assert no_sms.value.reason == "TEMPLATE_HAS_NO_CONTENT_FOR_CHANNEL"
