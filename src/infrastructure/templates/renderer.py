"""The send path's TemplateRenderer: the active version, briefly cached, rendered by the engine."""

from __future__ import annotations

import time
from collections.abc import Callable

from application.ports.repositories import UnitOfWorkFactory
from application.ports.templates import TemplateEngine
from application.template_rendering import render_version
from application.ttl_cache import TtlCache
from domain.errors import PreconditionFailed, ValidationFailed
from domain.names import is_valid_name
from domain.notification import Channel, Rendered, TemplateRef
from domain.template import Template, TemplateVersion

_Active = tuple[Template, TemplateVersion | None] | None


class JinjaTemplateRenderer:
    """Implements application.ports.templates.TemplateRenderer. An activation or deactivation
    reaches sends within ``cache_seconds``."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        engine: TemplateEngine,
        cache_seconds: float = 5.0,
        max_entries: int = 4096,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._uow = uow
        self._engine = engine
        self._cache: TtlCache[tuple[str, str], _Active] = TtlCache(
            cache_seconds, max_entries, monotonic
        )

    async def render(self, tenant_id: str, ref: TemplateRef, channel: Channel) -> Rendered:
        if not ref.name:
            raise ValidationFailed.single("template.name", "required")
        if not is_valid_name(ref.name):
            raise ValidationFailed.single("template.name", f"no template named {ref.name!r}")
        active = await self._active(tenant_id, ref.name)
        if active is None:
            raise ValidationFailed.single("template.name", f"no template named {ref.name!r}")
        template, version = active
        if version is None:
            raise PreconditionFailed(
                "template",
                f"template {ref.name!r} has no active version; activate one to send with it",
                "TEMPLATE_INACTIVE",
            )
        return await render_version(
            self._engine, version, template.default_locale, channel, ref.locale, ref.variables
        )

    async def _active(self, tenant_id: str, name: str) -> _Active:
        # Only a usable version is cached: an operator who has just created or activated a
        # template must not see sends refused for the next few seconds.
        return await self._cache.get_or_load(
            (tenant_id, name),
            lambda: self._load_active(tenant_id, name),
            keep=lambda active: active is not None and active[1] is not None,
        )

    async def _load_active(self, tenant_id: str, name: str) -> _Active:
        async with self._uow() as uow:
            return await uow.templates.get_active(tenant_id, name)
