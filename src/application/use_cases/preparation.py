"""Turning a send command into a checked send: address (given or from the directory), rendering,
validation. The policy step (policy_gate.py) then decides whether and when it goes out."""

from __future__ import annotations

from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass, replace
from datetime import datetime

from application.fingerprint import fingerprint
from application.ports.clock import IdGenerator
from application.ports.templates import TemplateRenderer
from application.principal import Principal
from application.use_cases.commands import SendNotificationCommand
from domain.errors import PreconditionFailed, ValidationFailed, Violations
from domain.notification import (
    ADDRESS_KIND_BY_CHANNEL,
    Address,
    Channel,
    Content,
    Decision,
    NewNotification,
    Notification,
    Rendered,
    Route,
    TemplateRef,
    validate_new,
)
from domain.recipient import Recipient


def check_channel(channel: Channel, available: Set[Channel], field: str = "channel") -> None:
    if channel not in available:
        raise PreconditionFailed(
            field,
            f"no provider is configured for {channel} yet; available: "
            + ", ".join(sorted(c.value for c in available)),
            reason="CHANNEL_NOT_CONFIGURED",
        )


MAX_FALLBACK_CHANNELS = 4


def check_fallback_chain(channel: Channel, fallbacks: Sequence[Channel]) -> None:
    """Each channel once, at most four after the first: checked before anything is rendered."""
    v = Violations()
    if len(fallbacks) > MAX_FALLBACK_CHANNELS:
        v.add("fallback_channels", f"more than {MAX_FALLBACK_CHANNELS} channels")
    seen = {channel}
    for i, fallback in enumerate(fallbacks):
        if fallback in seen:
            v.add(f"fallback_channels[{i}]", f"{fallback} is already in the chain")
        seen.add(fallback)
    v.raise_if_any()


def check_content_source(content: Content | None, has_template: bool, prefix: str = "") -> None:
    if content is not None and has_template:
        raise ValidationFailed.single(
            f"{prefix}content", "give either content or template, not both"
        )
    if content is None and not has_template:
        raise ValidationFailed.single(f"{prefix}content", "give either content or template")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A send that passed every check of its own; the policy step decides its fate."""

    new: NewNotification
    id: str
    tenant_id: str
    caller: str
    fingerprint: str
    content_hash: str
    bulk_job_id: str | None = None

    @property
    def user_id(self) -> str:
        return self.new.user_id

    def accept(self, now: datetime, decision: Decision) -> Notification:
        return Notification.accept(
            self.new,
            id=self.id,
            tenant_id=self.tenant_id,
            caller=self.caller,
            fingerprint=self.fingerprint,
            now=now,
            bulk_job_id=self.bulk_job_id,
            decision=decision,
        )


def directory_address(channel: Channel, user_id: str, recipient: Recipient | None) -> Address:
    """The recipient's address for ``channel`` from the directory; FAILED_PRECONDITION if none."""
    address = recipient.address_for(channel) if recipient is not None else None
    if address is None:
        kind = ADDRESS_KIND_BY_CHANNEL[channel]
        where = "is not in the directory" if recipient is None else f"has no usable {kind}"
        raise PreconditionFailed(
            "address",
            f"no address given, and recipient {user_id!r} {where} for {channel}",
            reason="RECIPIENT_HAS_NO_ADDRESS",
        )
    return address


class NotificationPreparer:
    """Builds a checked send from a command; raises before anything is written."""

    def __init__(
        self,
        renderer: TemplateRenderer,
        ids: IdGenerator,
        channels: Set[Channel],
        webhook_target_refusal: Callable[[str], str | None] = lambda url: None,
    ) -> None:
        self._renderer = renderer
        self._ids = ids
        self._channels = channels
        # Says why a webhook URL may not be sent to (a private or loopback target), as far as
        # the URL alone tells; the sender checks resolved addresses again.
        self._webhook_target_refusal = webhook_target_refusal

    @property
    def channels(self) -> Set[Channel]:
        return self._channels

    async def prepare(
        self,
        command: SendNotificationCommand,
        principal: Principal,
        now: datetime,
        recipient: Recipient | None = None,
        *,
        bulk_job_id: str | None = None,
    ) -> Prepared:
        """``recipient`` is the directory entry of ``command.user_id`` (None if there is none):
        it supplies the address and the template locale the command leaves out."""
        check_fallback_chain(command.channel, command.fallback_channels)
        check_channel(command.channel, self._channels)
        for i, channel in enumerate(command.fallback_channels):
            check_channel(channel, self._channels, f"fallback_channels[{i}]")
        check_content_source(command.content, command.template is not None)
        violations = Violations()
        address = None
        if command.address is not None:
            try:
                address = Address.parse(command.address.kind, command.address.value)
            except ValidationFailed as error:
                violations.extend(error)
            else:
                refusal = (
                    self._webhook_target_refusal(address.value)
                    if address.kind == "webhook_url"
                    else None
                )
                if refusal:
                    violations.add("address.webhook_url", f"not an allowed target: {refusal}")
        rendered: Rendered | None = None
        content = command.content
        if command.template is not None:
            try:
                rendered = await self._render(command, command.channel, principal, recipient)
                content = rendered.content
            except ValidationFailed as error:
                violations.extend(error)
        needs_address = command.channel in ADDRESS_KIND_BY_CHANNEL
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
        # Name every bad field at once, without repeating the address or content ones, and
        # without asking for an address the directory may still supply.
        for v in validate_new(new, now):
            if violations and v.field.startswith(("address", "content")):
                continue
            if needs_address and command.address is None and v.field.startswith("address"):
                continue
            violations.add(v.field, v.description)
        violations.raise_if_any()
        if command.fallback_channels:
            new = await self._with_fallbacks(new, command, principal, recipient)
        elif needs_address and address is None:
            new = replace(
                new, address=directory_address(command.channel, command.user_id, recipient)
            )
        return Prepared(
            new=new,
            id=self._ids.new_id(),
            tenant_id=principal.tenant_id,
            caller=principal.service,
            fingerprint=fingerprint(command.meaning()),
            content_hash=new.content.digest(),
            bulk_job_id=bulk_job_id,
        )

    async def _render(
        self,
        command: SendNotificationCommand,
        channel: Channel,
        principal: Principal,
        recipient: Recipient | None,
    ) -> Rendered:
        assert command.template is not None
        locale = command.template.locale or (recipient.locale if recipient else "")
        return await self._renderer.render(
            principal.tenant_id,
            TemplateRef(command.template.name, command.template.variables, locale),
            channel,
        )

    async def _with_fallbacks(
        self,
        new: NewNotification,
        command: SendNotificationCommand,
        principal: Principal,
        recipient: Recipient | None,
    ) -> NewNotification:
        """Resolve the whole chain: each channel's address (the given one for the first, the
        directory's for the rest) and content (the template rendered for that channel, or the
        inline content). A channel that cannot be reached is passed over and the record says
        why; the first reachable one goes first. None reachable: FAILED_PRECONDITION."""
        routes: list[tuple[Route, Rendered | None]] = []
        skipped: list[str] = []
        for channel in (new.channel, *command.fallback_channels):
            rendered = new.rendered if channel is new.channel else None
            content = new.content
            if command.template is not None and channel is not new.channel:
                try:
                    rendered = await self._render(command, channel, principal, recipient)
                except PreconditionFailed as error:
                    skipped.append(f"{channel} skipped: {error.description}")
                    continue
                content = rendered.content
            address = new.address if channel is new.channel else None
            if address is None and channel in ADDRESS_KIND_BY_CHANNEL:
                address = recipient.address_for(channel) if recipient is not None else None
                if address is None:
                    kind = ADDRESS_KIND_BY_CHANNEL[channel]
                    skipped.append(f"{channel} skipped: recipient has no usable {kind}")
                    continue
            routes.append((Route(channel, address, content), rendered))
        if not routes:
            raise PreconditionFailed(
                "address",
                f"no channel of the chain can reach recipient {command.user_id!r}: "
                + "; ".join(skipped),
                reason="RECIPIENT_HAS_NO_ADDRESS",
            )
        return new.routed([route for route, _ in routes], routes[0][1], skipped)
