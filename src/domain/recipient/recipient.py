"""The Recipient aggregate: one user of a tenant, where to reach them, what they agreed to."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from domain.notification import ADDRESS_KIND_BY_CHANNEL, Address, Channel
from domain.recipient.preferences import Preferences


class DevicePlatform(enum.StrEnum):
    IOS = "IOS"
    ANDROID = "ANDROID"
    WEB = "WEB"


@dataclass(frozen=True, slots=True)
class PushDevice:
    platform: DevicePlatform
    token: str
    added_at: datetime
    # Set when a provider said the token is dead (FCM UNREGISTERED, APNs 410): never used again.
    invalidated_at: datetime | None = None

    @property
    def usable(self) -> bool:
        return self.invalidated_at is None


# How long an endpoint's replaced secret keeps signing beside the new one.
WEBHOOK_SECRET_OVERLAP = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    url: str
    # '' means the tenant's secrets sign.
    secret: str = ""
    # Set when the endpoint answered 410 Gone: nothing is sent to it until it is replaced.
    disabled_at: datetime | None = None
    # The secret this one replaced ('' : the tenant's) signs too, as a second signature, until
    # ``previous_secret_expires_at``, so the receiver can switch without failing to verify.
    previous_secret: str = ""
    previous_secret_expires_at: datetime | None = None

    def with_secret(self, secret: str, now: datetime, overlap: timedelta) -> WebhookEndpoint:
        """The same URL signed with ``secret`` from now on, and with the current secret for
        ``overlap`` more; enabled again. A secret replaced earlier stops signing."""
        if secret == self.secret:
            return self
        return WebhookEndpoint(
            self.url,
            secret,
            previous_secret=self.secret,
            previous_secret_expires_at=now + overlap,
        )

    def previous_signer(self, now: datetime) -> str | None:
        """The replaced secret while it still signs ('' : the tenant's), else None."""
        if self.previous_secret_expires_at is None or now >= self.previous_secret_expires_at:
            return None
        return self.previous_secret


@dataclass(frozen=True, slots=True)
class Profile:
    """The contact data a caller states, already checked (see the application's parsing)."""

    email: Address | None = None
    phone: Address | None = None
    devices: tuple[tuple[DevicePlatform, str], ...] = ()
    webhook: WebhookEndpoint | None = None
    locale: str = ""
    time_zone: str = ""


@dataclass
class Recipient:
    tenant_id: str
    user_id: str
    created_at: datetime
    updated_at: datetime
    email: Address | None = None
    phone: Address | None = None
    devices: list[PushDevice] = field(default_factory=list)
    webhook: WebhookEndpoint | None = None
    locale: str = ""
    time_zone: str = ""
    preferences: Preferences = field(default_factory=Preferences)
    # Optimistic-concurrency version, owned by the repository.
    version: int = 0

    @classmethod
    def register(
        cls,
        tenant_id: str,
        user_id: str,
        profile: Profile,
        preferences: Preferences | None,
        now: datetime,
    ) -> Recipient:
        r = cls(tenant_id, user_id, created_at=now, updated_at=now)
        r.update_profile(profile, now)
        if preferences is not None:
            r.preferences = preferences
        return r

    def update_profile(
        self, profile: Profile, now: datetime, *, secret_overlap: timedelta = WEBHOOK_SECRET_OVERLAP
    ) -> None:
        """Replace the contact data. A device already known keeps when it was added and whether
        it was invalidated (a caller re-sending its device list must not revive a dead token);
        a webhook endpoint with a new URL or secret is enabled again, and a new secret for the
        same URL leaves the old one signing too for ``secret_overlap``."""
        known = {d.token: d for d in self.devices}
        self.devices = [
            known[token] if token in known else PushDevice(platform, token, now)
            for platform, token in profile.devices
        ]
        given, stored = profile.webhook, self.webhook
        if given is None or stored is None or given.url != stored.url:
            # A new URL's owner never held the old secret: nothing of it carries over.
            self.webhook = None if given is None else WebhookEndpoint(given.url, given.secret)
        else:
            self.webhook = stored.with_secret(given.secret, now, secret_overlap)
        self.email = profile.email
        self.phone = profile.phone
        self.locale = profile.locale
        self.time_zone = profile.time_zone
        self.updated_at = now

    def set_preferences(self, preferences: Preferences, now: datetime) -> None:
        self.preferences = preferences
        self.updated_at = now

    def unsubscribe_from_marketing(self, now: datetime) -> None:
        self.preferences = self.preferences.unsubscribed_from_marketing()
        self.updated_at = now

    def address_for(self, channel: Channel) -> Address | None:
        """Where a ``channel`` notification reaches this recipient; None if nowhere.
        PUSH uses the most recently added usable device."""
        kind = ADDRESS_KIND_BY_CHANNEL.get(channel)
        if kind == "email":
            return self.email
        if kind == "phone":
            return self.phone
        if kind == "device_token":
            usable = [d for d in self.devices if d.usable]
            if not usable:
                return None
            newest = max(usable, key=lambda d: d.added_at)
            return Address("device_token", newest.token)
        if kind == "webhook_url":
            if self.webhook is None or self.webhook.disabled_at is not None:
                return None
            return Address("webhook_url", self.webhook.url)
        return None

    def forget_address(self, address: Address, now: datetime) -> bool:
        """A provider said ``address`` is gone for good (token unregistered, endpoint 410): stop
        using it. False when it is not one of this recipient's usable addresses."""
        if address.kind == "device_token":
            return self.invalidate_device(address.value, now)
        if address.kind == "webhook_url":
            return self.disable_webhook(address.value, now)
        return False

    def invalidate_device(self, token: str, now: datetime) -> bool:
        """A provider said ``token`` is dead. False if it was unknown or already invalid."""
        for i, device in enumerate(self.devices):
            if device.token == token and device.usable:
                self.devices[i] = replace(device, invalidated_at=now)
                self.updated_at = now
                return True
        return False

    def disable_webhook(self, url: str, now: datetime) -> bool:
        """The endpoint answered 410 Gone. False if it was not this recipient's endpoint."""
        if self.webhook is None or self.webhook.url != url or self.webhook.disabled_at:
            return False
        self.webhook = replace(self.webhook, disabled_at=now)
        self.updated_at = now
        return True
