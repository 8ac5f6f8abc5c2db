"""What one template version holds: declared variables and per-locale, per-channel sources."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from domain.notification import Channel


class VariableType(enum.StrEnum):
    STRING = "STRING"
    INTEGER = "INTEGER"
    NUMBER = "NUMBER"
    BOOLEAN = "BOOLEAN"
    LIST = "LIST"
    OBJECT = "OBJECT"
    ANY = "ANY"


@dataclass(frozen=True, slots=True)
class VariableDeclaration:
    name: str
    type: VariableType
    required: bool = True


@dataclass(frozen=True, slots=True)
class Source:
    """One template source, named by its path in the request (``contents[0].email.subject``)."""

    path: str
    text: str
    # Only email HTML is autoescaped: escaping an SMS or a push title would show entities.
    html: bool = False


@dataclass(frozen=True, slots=True)
class EmailContent:
    subject: str
    html: str = ""
    text: str = ""

    def sources(self, prefix: str) -> Iterator[Source]:
        yield Source(f"{prefix}.subject", self.subject)
        if self.html:
            yield Source(f"{prefix}.html", self.html, html=True)
        if self.text:
            yield Source(f"{prefix}.text", self.text)


@dataclass(frozen=True, slots=True)
class SmsContent:
    text: str

    def sources(self, prefix: str) -> Iterator[Source]:
        yield Source(f"{prefix}.text", self.text)


@dataclass(frozen=True, slots=True)
class PushContent:
    title: str
    body: str
    data: Mapping[str, str] = field(default_factory=dict)

    def sources(self, prefix: str) -> Iterator[Source]:
        yield Source(f"{prefix}.title", self.title)
        yield Source(f"{prefix}.body", self.body)
        for key, text in self.data.items():
            yield Source(f"{prefix}.data.{key}", text)


@dataclass(frozen=True, slots=True)
class InAppContent:
    title: str
    body: str

    def sources(self, prefix: str) -> Iterator[Source]:
        yield Source(f"{prefix}.title", self.title)
        yield Source(f"{prefix}.body", self.body)


@dataclass(frozen=True, slots=True)
class WebhookContent:
    """A JSON object; every string in it is a template, rendered in place."""

    payload: Mapping[str, Any]

    def sources(self, prefix: str) -> Iterator[Source]:
        yield from _json_sources(f"{prefix}.payload", self.payload)


def _json_sources(path: str, value: Any) -> Iterator[Source]:
    if isinstance(value, str):
        yield Source(path, value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _json_sources(f"{path}.{key}", item)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _json_sources(f"{path}[{i}]", item)


ChannelContent = EmailContent | SmsContent | PushContent | InAppContent | WebhookContent

# The request's field name of each channel (LocalizedTemplateContent in the contract).
CHANNEL_FIELDS: Mapping[Channel, str] = {
    Channel.EMAIL: "email",
    Channel.SMS: "sms",
    Channel.PUSH: "push",
    Channel.IN_APP: "in_app",
    Channel.WEBHOOK: "webhook",
}


@dataclass(frozen=True, slots=True)
class LocalizedContent:
    locale: str
    email: EmailContent | None = None
    sms: SmsContent | None = None
    push: PushContent | None = None
    in_app: InAppContent | None = None
    webhook: WebhookContent | None = None

    def for_channel(self, channel: Channel) -> ChannelContent | None:
        found: ChannelContent | None = getattr(self, CHANNEL_FIELDS[channel])
        return found

    def channels(self) -> list[Channel]:
        return [c for c in CHANNEL_FIELDS if self.for_channel(c) is not None]


@dataclass(frozen=True, slots=True)
class TemplateVersionContent:
    """Everything a version says: its variables and its content, one entry per locale."""

    variables: tuple[VariableDeclaration, ...]
    contents: tuple[LocalizedContent, ...]

    def declared(self, name: str) -> VariableDeclaration | None:
        return next((v for v in self.variables if v.name == name), None)

    def localized(self, locale: str) -> LocalizedContent | None:
        return next((c for c in self.contents if c.locale == locale), None)

    def sources(self) -> Iterator[Source]:
        """Every source, named by its request path (contents[i].<channel>.<field>)."""
        for i, localized in enumerate(self.contents):
            for channel in localized.channels():
                content = localized.for_channel(channel)
                assert content is not None
                yield from content.sources(f"contents[{i}].{CHANNEL_FIELDS[channel]}")
