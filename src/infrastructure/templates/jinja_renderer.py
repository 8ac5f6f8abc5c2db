"""Templates rendered with Jinja2's immutable sandbox, loaded from the template store."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from application.ports.repositories import TemplateVersion, UnitOfWorkFactory
from domain.errors import FieldViolation, ValidationFailed
from domain.notification import Channel, Content, Rendered, TemplateRef

MAX_SOURCE_CHARS = 64 * 1024
MAX_RENDERED_CHARS = 256 * 1024


def locale_chain(locale: str) -> list[str]:
    """Most specific first, then the default (''): zh-Hant-TW -> zh-Hant -> zh -> ''."""
    parts = [p for p in locale.replace("_", "-").split("-") if p]
    chain = ["-".join(parts[:i]) for i in range(len(parts), 0, -1)]
    return [*chain, ""]


class JinjaTemplateRenderer:
    def __init__(self, uow: UnitOfWorkFactory, cache_seconds: float = 5.0) -> None:
        self._uow = uow
        self._env = ImmutableSandboxedEnvironment(
            undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False
        )
        self._cache_seconds = cache_seconds
        self._cache: dict[tuple[str, str], tuple[float, list[TemplateVersion]]] = {}

    def check_source(self, title: str, body: str) -> None:
        for field, source in (("title", title), ("body", body)):
            if len(source) > MAX_SOURCE_CHARS:
                raise ValidationFailed.single(field, f"longer than {MAX_SOURCE_CHARS} characters")
            try:
                self._env.parse(source)
            except TemplateSyntaxError as error:
                raise ValidationFailed.single(
                    field, f"template syntax error on line {error.lineno}: {error.message}"
                ) from error

    async def _versions(self, tenant_id: str, name: str) -> list[TemplateVersion]:
        key = (tenant_id, name)
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self._uow() as uow:
            versions = await uow.templates.latest(tenant_id, name)
        self._cache[key] = (now + self._cache_seconds, versions)
        return versions

    async def render(self, tenant_id: str, ref: TemplateRef, channel: Channel) -> Rendered:
        if not ref.name:
            raise ValidationFailed.single("template.name", "required")
        versions = await self._versions(tenant_id, ref.name)
        if not versions:
            raise ValidationFailed.single("template.name", f"no template named {ref.name!r}")
        by_locale = {v.locale: v for v in versions}
        chosen = next(
            (by_locale[loc] for loc in locale_chain(ref.locale) if loc in by_locale),
            versions[0],
        )
        title = self._render_one(chosen.title, ref.variables)
        body = self._render_one(chosen.body, ref.variables)
        return Rendered(Content(title, body), chosen.name, chosen.version, chosen.locale)

    def _render_one(self, source: str, variables: Mapping[str, Any]) -> str:
        ast = self._env.parse(source)
        missing = sorted(meta.find_undeclared_variables(ast) - set(variables))
        if missing:
            raise ValidationFailed(
                [
                    FieldViolation(f"template.variables.{name}", "required by the template")
                    for name in missing
                ]
            )
        try:
            text = self._env.from_string(source).render(dict(variables))
        except SecurityError as error:
            raise ValidationFailed.single("template", f"refused by the sandbox: {error}") from error
        except UndefinedError as error:
            raise ValidationFailed.single("template.variables", str(error)) from error
        except (TypeError, ValueError, ArithmeticError) as error:
            raise ValidationFailed.single(
                "template.variables", f"cannot be used by the template: {error}"
            ) from error
        if len(text) > MAX_RENDERED_CHARS:
            raise ValidationFailed.single(
                "template", f"renders to more than {MAX_RENDERED_CHARS} characters"
            )
        return text
