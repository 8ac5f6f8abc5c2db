"""Small value objects of a notification: channel, priority, content, template reference."""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_TITLE_CHARS = 512
MAX_BODY_CHARS = 64 * 1024
MAX_CATEGORY_CHARS = 128
MAX_USER_ID_CHARS = 256
MAX_METADATA_ENTRIES = 64
MAX_METADATA_VALUE_CHARS = 1024


class Channel(enum.StrEnum):
    EMAIL = "EMAIL"
    SMS = "SMS"
    PUSH = "PUSH"
    WEBHOOK = "WEBHOOK"
    IN_APP = "IN_APP"


class Priority(enum.IntEnum):
    """Higher value is served first. The value is stable: it is stored and used in queue keys."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


@dataclass(frozen=True, slots=True)
class Content:
    """What the recipient reads, already rendered.

    ``title`` is the subject, push title or inbox headline; ``body`` the plain text (the SMS
    message); ``html`` the HTML alternative of an email; ``data`` the push data or the webhook
    payload (JSON values)."""

    title: str
    body: str
    html: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    # digest(), once computed: a bulk send shares one Content among up to 1,000 recipients.
    _digest: str = field(default="", init=False, repr=False, compare=False)

    def digest(self) -> str:
        """SHA-256 (hex) of the content: the same content always gives the same digest."""
        if not self._digest:
            canonical = json.dumps(
                [self.title, self.body, self.html, self.data],
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=False,
                default=str,
            )
            object.__setattr__(self, "_digest", hashlib.sha256(canonical.encode()).hexdigest())
        return self._digest


@dataclass(frozen=True, slots=True)
class TemplateRef:
    """A request to render a named template with variables, optionally in a given locale."""

    name: str
    variables: Mapping[str, Any] = field(default_factory=dict)
    locale: str = ""


@dataclass(frozen=True, slots=True)
class Rendered:
    """The result of rendering a template: the content and which template version made it."""

    content: Content
    template_name: str
    template_version: int
    locale: str
