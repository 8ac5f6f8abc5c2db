from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from domain.notification import Channel, Content, Rendered, TemplateRef
from domain.template import ChannelContent, TemplateVersionContent


class TemplateRenderer(Protocol):
    """What sends use: the ACTIVE version of a named template, rendered for one channel."""

    async def render(self, tenant_id: str, ref: TemplateRef, channel: Channel) -> Rendered:
        """ValidationFailed naming ``template.name`` for an unknown template and
        ``template.variables.<name>`` for a missing, mistyped or undeclared variable;
        PreconditionFailed when no version is active (TEMPLATE_INACTIVE) or no locale of the
        fallback chain has content for ``channel`` (TEMPLATE_HAS_NO_CONTENT_FOR_CHANNEL)."""
        ...


class TemplateEngine(Protocol):
    """The template language: checking sources before they are stored, and rendering them."""

    async def check(self, content: TemplateVersionContent) -> None:
        """ValidationFailed naming each source (``contents[0].email.subject``) that does not
        compile, reaches for internals, or uses a variable ``content`` does not declare."""
        ...

    async def render(
        self, content: ChannelContent, values: Mapping[str, Any], template_field: str
    ) -> Content:
        """Render with already checked values. ValidationFailed naming ``template_field`` when
        the sandbox refuses the template, or it runs too long or renders too much."""
        ...
