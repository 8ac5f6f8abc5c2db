"""TemplateService's verbs: each loads a template, calls one domain verb, and commits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from application.errors import AlreadyExists
from application.ports.clock import Clock
from application.ports.repositories import UnitOfWork, UnitOfWorkFactory
from application.ports.templates import TemplateEngine
from application.principal import Principal
from application.template_rendering import PREVIEW_FIELDS, render_version
from application.use_cases import paging
from domain.errors import NotFound, PreconditionFailed, ValidationFailed
from domain.names import check_name
from domain.notification import Channel, Rendered
from domain.template import Template, TemplateVersion, TemplateVersionContent, check_content


@dataclass(frozen=True, slots=True)
class TemplateDraft:
    """A new version as a request describes it. ``None`` keeps the current description or
    default locale (an update)."""

    name: str
    content: TemplateVersionContent
    description: str | None = None
    default_locale: str | None = None
    activate: bool = False


@dataclass(frozen=True, slots=True)
class TemplateWithVersion:
    template: Template
    version: TemplateVersion


@dataclass(frozen=True, slots=True)
class RenderRequest:
    name: str
    channel: Channel | None
    version: int = 0
    locale: str = ""
    variables: Mapping[str, Any] = field(default_factory=dict)


async def _load(uow: UnitOfWork, tenant_id: str, name: str, for_update: bool = False) -> Template:
    check_name("name", name)
    template = await uow.templates.get(tenant_id, name, for_update=for_update)
    if template is None:
        raise NotFound("template", name)
    return template


async def _load_version(uow: UnitOfWork, template: Template, version: int) -> TemplateVersion:
    found = await uow.templates.get_version(template.tenant_id, template.name, version)
    if found is None:
        raise NotFound("template version", f"{template.name} v{version}")
    return found


class CreateTemplate:
    def __init__(self, uow: UnitOfWorkFactory, engine: TemplateEngine, clock: Clock) -> None:
        self._uow = uow
        self._engine = engine
        self._clock = clock

    async def execute(self, principal: Principal, draft: TemplateDraft) -> TemplateWithVersion:
        now = self._clock.now()
        template, version = Template.create(
            tenant_id=principal.tenant_id,
            name=draft.name,
            description=draft.description or "",
            default_locale=draft.default_locale or "",
            content=draft.content,
            now=now,
            created_by=principal.service,
        )
        await self._engine.check(version.content)
        if draft.activate:
            template.activate(version.version, now)
        version = template.new_version(version.version)
        async with self._uow() as uow:
            if not await uow.templates.add(template):
                raise AlreadyExists("template", draft.name)
            await uow.commit()
        return TemplateWithVersion(template, version)


class UpdateTemplate:
    def __init__(self, uow: UnitOfWorkFactory, engine: TemplateEngine, clock: Clock) -> None:
        self._uow = uow
        self._engine = engine
        self._clock = clock

    async def execute(self, principal: Principal, draft: TemplateDraft) -> TemplateWithVersion:
        check_name("name", draft.name)
        # Checked before the row is locked: compiling every source is the slow part, and an
        # oversized one is refused before it is compiled.
        check_content(draft.content)
        await self._engine.check(draft.content)
        async with self._uow() as uow:
            template = await _load(uow, principal.tenant_id, draft.name, for_update=True)
            now = self._clock.now()
            version = template.add_version(
                draft.content,
                now,
                principal.service,
                description=draft.description,
                default_locale=draft.default_locale,
            )
            if draft.activate:
                template.activate(version.version, now)
            version = template.new_version(version.version)
            await uow.templates.save(template)
            await uow.commit()
        return TemplateWithVersion(template, version)


class GetTemplate:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def execute(self, principal: Principal, name: str, version: int) -> TemplateWithVersion:
        """``version`` 0 is the latest."""
        if version < 0:
            raise ValidationFailed.single("version", "must be 0 (the latest) or more")
        async with self._uow() as uow:
            template = await _load(uow, principal.tenant_id, name)
            found = await _load_version(uow, template, version or template.latest_version)
        return TemplateWithVersion(template, found)


class ListTemplates:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def execute(
        self, principal: Principal, page_size: int, page_token: str
    ) -> tuple[list[Template], str]:
        size = paging.page_size(page_size)
        # No filters: the token is bound to the operation alone.
        filters = {"list": "templates"}
        after = paging.after_name(page_token, filters)
        async with self._uow() as uow:
            found = await uow.templates.list(principal.tenant_id, after, size + 1)
        return paging.name_page(found, size, lambda t: t.name, filters)


class ActivateTemplateVersion:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow = uow
        self._clock = clock

    async def execute(self, principal: Principal, name: str, version: int) -> Template:
        async with self._uow() as uow:
            template = await _load(uow, principal.tenant_id, name, for_update=True)
            template.activate(version, self._clock.now())
            await uow.templates.save(template)
            await uow.commit()
        return template


class DeactivateTemplate:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow = uow
        self._clock = clock

    async def execute(self, principal: Principal, name: str) -> Template:
        async with self._uow() as uow:
            template = await _load(uow, principal.tenant_id, name, for_update=True)
            template.deactivate(self._clock.now())
            await uow.templates.save(template)
            await uow.commit()
        return template


class RenderTemplate:
    """A preview: any version (a draft too), nothing stored or sent."""

    def __init__(self, uow: UnitOfWorkFactory, engine: TemplateEngine) -> None:
        self._uow = uow
        self._engine = engine

    async def execute(self, principal: Principal, request: RenderRequest) -> Rendered:
        if request.channel is None:
            raise ValidationFailed.single("channel", "required")
        if request.version < 0:
            raise ValidationFailed.single("version", "must be 0 (the active one) or more")
        async with self._uow() as uow:
            template = await _load(uow, principal.tenant_id, request.name)
            number = request.version or template.active_version
            if number is None:
                raise PreconditionFailed(
                    "template",
                    f"template {template.name!r} has no active version; name a version",
                    "TEMPLATE_INACTIVE",
                )
            version = await _load_version(uow, template, number)
        return await render_version(
            self._engine,
            version,
            template.default_locale,
            request.channel,
            request.locale,
            request.variables,
            PREVIEW_FIELDS,
        )
