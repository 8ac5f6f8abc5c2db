from __future__ import annotations

from typing import Protocol

from domain.notification import Channel, Rendered, TemplateRef


class TemplateRenderer(Protocol):
    async def render(self, tenant_id: str, ref: TemplateRef, channel: Channel) -> Rendered:
        """Render the named template. Raises NotFound for an unknown template and
        ValidationFailed naming the variable for a missing or unusable variable."""
        ...

    def check_source(self, title: str, body: str) -> None:
        """Raise ValidationFailed (naming ``title`` or ``body``) if either does not compile."""
        ...
