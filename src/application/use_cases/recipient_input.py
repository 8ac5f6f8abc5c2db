"""A recipient and their preferences as a caller states them, checked into domain values.

Every bad field is reported at once, named by its path in the contract (``recipient.email``,
``preferences.caps[0].per_hour``), so a caller fixes a request in one round trip."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from domain.errors import ValidationFailed, Violations
from domain.locale import normalize_locale
from domain.notification import Address, Channel
from domain.notification.values import MAX_USER_ID_CHARS
from domain.policy import Limits
from domain.recipient import (
    CategoryCap,
    ChannelPreference,
    DevicePlatform,
    Preferences,
    Profile,
    QuietHours,
    WebhookEndpoint,
)
from domain.timezone import zone

T = TypeVar("T")

MAX_DEVICES = 100
SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


@dataclass(frozen=True, slots=True)
class DeviceInput:
    # A DevicePlatform value; '' when the caller left it unset, anything else is refused.
    platform: str
    token: str


@dataclass(frozen=True, slots=True)
class WebhookInput:
    url: str
    secret: str = ""


@dataclass(frozen=True, slots=True)
class RecipientInput:
    user_id: str
    email: str = ""
    phone: str = ""
    devices: Sequence[DeviceInput] = ()
    webhook: WebhookInput | None = None
    locale: str = ""
    time_zone: str = ""


@dataclass(frozen=True, slots=True)
class ChannelPreferenceInput:
    category: str
    # A Channel value; '' for every channel.
    channel: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class CapInput:
    category: str
    per_hour: int
    per_day: int


@dataclass(frozen=True, slots=True)
class QuietHoursInput:
    start: str
    end: str


@dataclass(frozen=True, slots=True)
class PreferencesInput:
    channels: Sequence[ChannelPreferenceInput] = ()
    marketing_opt_out: bool = False
    quiet_hours: QuietHoursInput | None = None
    caps: Sequence[CapInput] = field(default=())


def check_user_id(user_id: str, path: str, v: Violations) -> None:
    if not user_id.strip():
        v.add(path, "required")
    elif len(user_id) > MAX_USER_ID_CHARS:
        v.add(path, f"longer than {MAX_USER_ID_CHARS} characters")


def require_user_id(user_id: str, path: str = "user_id") -> str:
    v = Violations()
    check_user_id(user_id, path, v)
    v.raise_if_any()
    return user_id


def _collect(v: Violations, parse: Callable[[], T]) -> T | None:
    try:
        return parse()
    except ValidationFailed as error:
        v.extend(error)
        return None


def _address(kind: str, value: str, path: str, v: Violations) -> Address | None:
    """Address.parse names the field after the kind (``x.device_token``); the contract's path
    for the same value can differ (``devices[0].token``), so the path is set here."""
    try:
        return Address.parse(kind, value)
    except ValidationFailed as error:
        for violation in error.violations:
            v.add(path, violation.description)
        return None


def _check_secret(secret: str, path: str, v: Violations) -> None:
    if not secret:
        return
    expected = (
        f'"{SECRET_PREFIX}" followed by the base64 of {MIN_SECRET_BYTES} to '
        f"{MAX_SECRET_BYTES} random bytes"
    )
    if not secret.startswith(SECRET_PREFIX):
        v.add(path, f"must be {expected}")
        return
    try:
        raw = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        v.add(path, f"is not valid base64; must be {expected}")
        return
    if not MIN_SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        v.add(path, f"decodes to {len(raw)} bytes; must be {expected}")


def _webhook(webhook: WebhookInput, path: str, v: Violations) -> WebhookEndpoint | None:
    # A private or loopback URL is not refused here: the SSRF guard decides at send time,
    # where configuration (dev mode, allow_private_targets) is known.
    url = None
    if webhook.url:
        url = _address("webhook_url", webhook.url, f"{path}.url", v)
    else:
        v.add(f"{path}.url", "required when a webhook endpoint is given")
    _check_secret(webhook.secret, f"{path}.secret", v)
    return WebhookEndpoint(url.value, webhook.secret) if url is not None else None


def _devices(
    devices: Sequence[DeviceInput], path: str, v: Violations
) -> tuple[tuple[DevicePlatform, str], ...]:
    if len(devices) > MAX_DEVICES:
        v.add(path, f"more than {MAX_DEVICES} devices")
    out: list[tuple[DevicePlatform, str]] = []
    first_index: dict[str, int] = {}
    for i, device in enumerate(devices):
        at = f"{path}[{i}]"
        if device.platform not in DevicePlatform.__members__:
            what = "required" if not device.platform else f"unknown platform {device.platform}"
            v.add(f"{at}.platform", f"{what}: IOS, ANDROID or WEB")
        token = _address("device_token", device.token, f"{at}.token", v)
        if token is not None and token.value in first_index:
            v.add(f"{at}.token", f"repeats {path}[{first_index[token.value]}]")
        elif token is not None:
            first_index[token.value] = i
            if device.platform in DevicePlatform.__members__:
                out.append((DevicePlatform(device.platform), token.value))
    return tuple(out)


def check_profile(recipient: RecipientInput, path: str, v: Violations) -> Profile:
    """The profile, with every violation added to ``v`` (the profile is meaningless if any)."""
    check_user_id(recipient.user_id, f"{path}.user_id", v)
    email = _address("email", recipient.email, f"{path}.email", v) if recipient.email else None
    phone = _address("phone", recipient.phone, f"{path}.phone", v) if recipient.phone else None
    devices = _devices(recipient.devices, f"{path}.devices", v)
    webhook = (
        _webhook(recipient.webhook, f"{path}.webhook", v) if recipient.webhook is not None else None
    )
    locale = _collect(v, lambda: normalize_locale(recipient.locale, f"{path}.locale"))
    _collect(v, lambda: zone(recipient.time_zone, f"{path}.time_zone"))
    return Profile(email, phone, devices, webhook, locale or "", recipient.time_zone)


def _channel(value: str, path: str, v: Violations) -> Channel | None:
    if not value:
        return None
    if value not in Channel.__members__:
        v.add(path, f"unknown channel {value}")
        return None
    return Channel(value)


def _cap(cap: CapInput, path: str, v: Violations) -> CategoryCap:
    limits = _collect(v, lambda: Limits.parse(cap.per_hour, cap.per_day, path))
    return CategoryCap(cap.category, limits or Limits())


def check_preferences(preferences: PreferencesInput, path: str, v: Violations) -> Preferences:
    """The preferences, with every violation added to ``v``."""
    channels: list[ChannelPreference] = []
    # An unknown channel reads as "every channel" below; a "repeats" verdict on it would be
    # noise next to the real error.
    unknown_channel: set[str] = set()
    for i, p in enumerate(preferences.channels):
        at = f"{path}.channels[{i}]"
        channel = _channel(p.channel, f"{at}.channel", v)
        if p.channel and channel is None:
            unknown_channel.add(at)
        channels.append(ChannelPreference(p.category, channel, p.enabled))
    quiet = preferences.quiet_hours
    quiet_hours = (
        _collect(v, lambda: QuietHours.parse(quiet.start, quiet.end, f"{path}.quiet_hours"))
        if quiet is not None
        else None
    )
    caps = [_cap(c, f"{path}.caps[{i}]", v) for i, c in enumerate(preferences.caps)]
    try:
        return Preferences.parse(
            channels, preferences.marketing_opt_out, quiet_hours, caps, field=path
        )
    except ValidationFailed as error:
        for violation in error.violations:
            if violation.field not in unknown_channel:
                v.add(violation.field, violation.description)
        return Preferences()


def parse_recipient(
    recipient: RecipientInput, preferences: PreferencesInput | None, path: str = "recipient"
) -> tuple[Profile, Preferences | None]:
    v = Violations()
    profile = check_profile(recipient, path, v)
    prefs = (
        check_preferences(preferences, f"{path}.preferences", v)
        if preferences is not None
        else None
    )
    v.raise_if_any()
    return profile, prefs


def parse_preferences(
    user_id: str, preferences: PreferencesInput, path: str = "preferences"
) -> Preferences:
    v = Violations()
    check_user_id(user_id, "user_id", v)
    prefs = check_preferences(preferences, path, v)
    v.raise_if_any()
    return prefs
