"""What callers ask for, already decoded from the wire but not yet validated by the domain."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain.notification import Channel, Content, Priority


@dataclass(frozen=True, slots=True)
class AddressInput:
    """An address as given: its kind (email, phone, device_token, webhook_url) and value."""

    kind: str
    value: str


@dataclass(frozen=True, slots=True)
class TemplateInput:
    name: str
    variables: Mapping[str, Any] = field(default_factory=dict)
    locale: str = ""


def _content_meaning(content: Content | None) -> list[Any] | None:
    if content is None:
        return None
    # html and data only when present, so that fingerprints stored before they existed still
    # match their retries.
    extra = [content.html, dict(content.data)] if content.html or content.data else []
    return [content.title, content.body, *extra]


@dataclass(frozen=True, slots=True)
class SendNotificationCommand:
    request_id: str
    user_id: str
    channel: Channel
    category: str
    priority: Priority = Priority.MEDIUM
    content: Content | None = None
    template: TemplateInput | None = None
    address: AddressInput | None = None
    scheduled_at: datetime | None = None
    expires_at: datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Channels to try in order after ``channel`` fails permanently.
    fallback_channels: tuple[Channel, ...] = ()

    def meaning(self) -> dict[str, Any]:
        """Everything but the request_id: what must match for a retry to be a replay."""
        meaning = {
            "user_id": self.user_id,
            "channel": self.channel.value,
            "priority": int(self.priority),
            "category": self.category,
            "content": _content_meaning(self.content),
            "template": (
                [self.template.name, dict(self.template.variables), self.template.locale]
                if self.template
                else None
            ),
            "address": [self.address.kind, self.address.value] if self.address else None,
            "scheduled_at": self.scheduled_at.isoformat() if self.scheduled_at else None,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "metadata": dict(self.metadata),
        }
        # Only when present, so that fingerprints stored before chains existed still match.
        if self.fallback_channels:
            meaning["fallback_channels"] = [c.value for c in self.fallback_channels]
        return meaning


@dataclass(frozen=True, slots=True)
class BulkRecipientInput:
    user_id: str
    address: AddressInput | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)
    locale: str = ""


@dataclass(frozen=True, slots=True)
class BulkSendCommand:
    request_id: str
    channel: Channel
    category: str
    recipients: Sequence[BulkRecipientInput]
    priority: Priority = Priority.MEDIUM
    content: Content | None = None
    template: TemplateInput | None = None
    scheduled_at: datetime | None = None
    expires_at: datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    fallback_channels: tuple[Channel, ...] = ()
    # The job to add the recipients to: empty for a new job with a server-assigned id.
    job_id: str = ""

    def meaning(self) -> Any:
        """Everything but the request_id: what must match for a retry to be a replay."""
        recipients = [self.for_recipient(i).meaning() for i in range(len(self.recipients))]
        # The bare list without a job id, so that fingerprints stored before jobs could be
        # named or extended still match their retries.
        return {"job_id": self.job_id, "recipients": recipients} if self.job_id else recipients

    def for_recipient(self, index: int) -> SendNotificationCommand:
        """The single send this bulk send makes for one recipient (its own derived request_id)."""
        r = self.recipients[index]
        template = None
        if self.template is not None:
            template = TemplateInput(
                self.template.name,
                {**self.template.variables, **r.variables},
                r.locale or self.template.locale,
            )
        return SendNotificationCommand(
            request_id=f"{self.request_id}#{index}",
            user_id=r.user_id,
            channel=self.channel,
            category=self.category,
            priority=self.priority,
            content=self.content,
            template=template,
            address=r.address,
            scheduled_at=self.scheduled_at,
            expires_at=self.expires_at,
            metadata=self.metadata,
            fallback_channels=self.fallback_channels,
        )
