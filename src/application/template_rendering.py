"""Rendering one version of a template for one channel and locale: shared by sends (the active
version) and previews (any version)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from application.ports.templates import TemplateEngine
from domain.errors import PreconditionFailed
from domain.locale import locale_chain, normalize_locale
from domain.notification import Channel, Rendered
from domain.template import TemplateVersion, checked_values


@dataclass(frozen=True, slots=True)
class RequestFields:
    """Where the request being served carries the template's inputs, for error messages."""

    template: str = "template"
    variables: str = "template.variables"
    locale: str = "template.locale"


SEND_FIELDS = RequestFields()
PREVIEW_FIELDS = RequestFields(template="name", variables="variables", locale="locale")


async def render_version(
    engine: TemplateEngine,
    version: TemplateVersion,
    default_locale: str,
    channel: Channel,
    locale: str,
    variables: Mapping[str, Any],
    fields: RequestFields = SEND_FIELDS,
) -> Rendered:
    """The content of the first locale of the fallback chain (``locale`` -> ... -> the
    template's default) that has content for ``channel``."""
    wanted = normalize_locale(locale, fields.locale)
    values = checked_values(
        version.content, variables, version.name, version.version, fields.variables
    )
    for candidate in locale_chain(wanted, default_locale):
        localized = version.content.localized(candidate)
        content = localized.for_channel(channel) if localized is not None else None
        if content is not None:
            rendered = await engine.render(content, values, fields.template)
            return Rendered(rendered, version.name, version.version, candidate)
    raise PreconditionFailed(
        "template",
        f"template {version.name!r} version {version.version} has no {channel} content "
        f"for {wanted or default_locale!r} or any locale it falls back to",
        "TEMPLATE_HAS_NO_CONTENT_FOR_CHANNEL",
    )
