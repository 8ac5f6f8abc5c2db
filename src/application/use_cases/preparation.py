"""Turning a send command into an accepted Notification: address, rendering, validation."""

from __future__ import annotations

from collections.abc import Set
from datetime import datetime

from application.fingerprint import fingerprint
from application.ports.clock import IdGenerator
from application.ports.templates import TemplateRenderer
from application.principal import Principal
from application.use_cases.commands import SendNotificationCommand
from domain.errors import PreconditionFailed, ValidationFailed, Violations
from domain.notification import (
    Address,
    Channel,
    Content,
    NewNotification,
    Notification,
    Rendered,
    TemplateRef,
    validate_new,
)


def check_channel(channel: Channel, available: Set[Channel]) -> None:
    if channel not in available:
        raise PreconditionFailed(
            "channel",
            f"no provider is configured for {channel} yet; available: "
            + ", ".join(sorted(c.value for c in available)),
            reason="CHANNEL_NOT_CONFIGURED",
        )


def check_content_source(content: Content | None, has_template: bool, prefix: str = "") -> None:
    if content is not None and has_template:
        raise ValidationFailed.single(
            f"{prefix}content", "give either content or template, not both"
        )
    if content is None and not has_template:
        raise ValidationFailed.single(f"{prefix}content", "give either content or template")


class NotificationPreparer:
    """Builds the aggregate for a command; raises before anything is written."""

    def __init__(
        self, renderer: TemplateRenderer, ids: IdGenerator, channels: Set[Channel]
    ) -> None:
        self._renderer = renderer
        self._ids = ids
        self._channels = channels

    @property
    def channels(self) -> Set[Channel]:
        return self._channels

    async def prepare(
        self,
        command: SendNotificationCommand,
        principal: Principal,
        now: datetime,
        *,
        bulk_job_id: str | None = None,
    ) -> Notification:
        check_channel(command.channel, self._channels)
        check_content_source(command.content, command.template is not None)
        violations = Violations()
        address = None
        if command.address is not None:
            try:
                address = Address.parse(command.address.kind, command.address.value)
            except ValidationFailed as error:
                violations.extend(error)
        rendered: Rendered | None = None
        content = command.content
        if command.template is not None:
            try:
                rendered = await self._renderer.render(
                    principal.tenant_id,
                    TemplateRef(
                        command.template.name, command.template.variables, command.template.locale
                    ),
                    command.channel,
                )
                content = rendered.content
            except ValidationFailed as error:
                violations.extend(error)
        new = NewNotification(
            request_id=command.request_id,
            user_id=command.user_id,
            channel=command.channel,
            priority=command.priority,
            category=command.category,
            content=content or Content("", ""),
            address=address,
            scheduled_at=command.scheduled_at,
            expires_at=command.expires_at,
            metadata=command.metadata,
            rendered=rendered,
        )
        if violations:
            # Name every other bad field too, without repeating the address or content ones.
            for v in validate_new(new, now):
                if not v.field.startswith(("address", "content")):
                    violations.add(v.field, v.description)
            violations.raise_if_any()
        return Notification.accept(
            new,
            id=self._ids.new_id(),
            tenant_id=principal.tenant_id,
            caller=principal.service,
            fingerprint=fingerprint(command.meaning()),
            now=now,
            bulk_job_id=bulk_job_id,
        )
