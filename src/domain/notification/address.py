"""Where a notification goes on its channel: an email, a phone number, a device token, a URL."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from domain.errors import ValidationFailed
from domain.notification.values import Channel

_EMAIL = re.compile(
    r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
MAX_DEVICE_TOKEN_CHARS = 4096
MAX_URL_CHARS = 2048

# The kind of address each channel needs; IN_APP needs none (the inbox is keyed by user id).
ADDRESS_KIND_BY_CHANNEL: dict[Channel, str] = {
    Channel.EMAIL: "email",
    Channel.SMS: "phone",
    Channel.PUSH: "device_token",
    Channel.WEBHOOK: "webhook_url",
}


@dataclass(frozen=True, slots=True)
class Address:
    kind: str
    value: str

    @classmethod
    def parse(cls, kind: str, value: str, field: str = "address") -> Address:
        """Validate ``value`` as an address of ``kind``; ``field`` names it in any error."""
        path = f"{field}.{kind}"
        # The messages never repeat the rejected value: errors are logged, and a malformed
        # address is still personal data.
        if kind == "email":
            if not _EMAIL.fullmatch(value) or len(value) > 254:
                raise ValidationFailed.single(path, "is not a valid email address")
        elif kind == "phone":
            if not _E164.fullmatch(value):
                raise ValidationFailed.single(
                    path, "is not an E.164 phone number (e.g. +14155550123)"
                )
        elif kind == "device_token":
            if not value.strip() or len(value) > MAX_DEVICE_TOKEN_CHARS:
                raise ValidationFailed.single(
                    path, f"must be 1 to {MAX_DEVICE_TOKEN_CHARS} non-blank characters"
                )
        elif kind == "webhook_url":
            _check_webhook_url(value, path)
        else:
            raise ValidationFailed.single(field, f"unknown address kind {kind!r}")
        return cls(kind, value)

    def fits(self, channel: Channel) -> bool:
        return ADDRESS_KIND_BY_CHANNEL.get(channel) == self.kind


def _check_webhook_url(value: str, path: str) -> None:
    if len(value) > MAX_URL_CHARS:
        raise ValidationFailed.single(path, f"longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ValidationFailed.single(path, "is not a URL (bad port or brackets)") from exc
    if parts.scheme not in ("http", "https"):
        raise ValidationFailed.single(path, "must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValidationFailed.single(path, "has no host")
    if parts.username or parts.password:
        raise ValidationFailed.single(path, "must not carry credentials")
    if port == 0:
        raise ValidationFailed.single(path, "port 0 is not a valid target")
