"""Which push service a device token goes to: APNs for iOS devices, FCM for the rest."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Protocol

from application.ports.repositories import UnitOfWorkFactory
from application.ports.sender import Delivered, DeliveryFailed, Sender
from application.ttl_cache import TtlCache
from domain.notification import Channel, ErrorClass, Notification
from domain.recipient import DevicePlatform

log = logging.getLogger(__name__)

# An APNs device token is binary data in hex. Anything else registered for an iOS device is an
# FCM registration token of an iOS app (FCM relays it to APNs itself).
_APNS_TOKEN = re.compile(r"^(?:[0-9A-Fa-f]{2}){8,}$")
ROUTING_PROVIDER = "push"


class PlatformLookup(Protocol):
    async def platform_of(
        self, tenant_id: str, user_id: str, token: str
    ) -> DevicePlatform | None: ...


class DevicePlatforms:
    """The platform the recipient directory records for a device token; None when the token is
    not (or no longer) among the recipient's devices. Cached briefly: a token's platform does
    not change, and a send must not cost a query each."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        *,
        ttl_seconds: float = 60.0,
        max_entries: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._uow = uow
        self._cache: TtlCache[tuple[str, str, str], DevicePlatform | None] = TtlCache(
            ttl_seconds, max_entries, monotonic
        )

    async def platform_of(self, tenant_id: str, user_id: str, token: str) -> DevicePlatform | None:
        async def load() -> DevicePlatform | None:
            async with self._uow() as uow:
                recipient = await uow.recipients.get(tenant_id, user_id)
            if recipient is None:
                return None
            for device in recipient.devices:
                if device.token == token:
                    return device.platform
            return None

        return await self._cache.get_or_load((tenant_id, user_id, token), load)


class PlatformRoutedSender:
    """The PUSH channel's sender: iOS devices with APNs tokens go to ``ios`` (APNs), everything
    else, unknown platforms included, to ``other`` (FCM, which reaches iOS apps too).

    When the service a device needs is not configured, the other one is tried, except that an
    Android or web device never goes to APNs, which cannot reach it and would call the token
    bad. An address rejection (token gone) from a service that is not the device's own is not
    passed on: it says the token does not fit that service, not that the device is gone."""

    channel = Channel.PUSH

    def __init__(
        self, platforms: PlatformLookup, *, ios: Sender | None, other: Sender | None
    ) -> None:
        self._platforms = platforms
        self._ios = ios
        self._other = other

    async def send(self, notification: Notification) -> Delivered:
        address = notification.address
        if address is None or address.kind != "device_token" or not address.value.strip():
            raise _permanent("the notification has no device token")
        token = address.value
        pinned = self._pinned_sender(notification)
        if pinned is not None:
            # An earlier request went out unanswered: only that service may try again, whatever
            # the directory says now, or the device could get it twice.
            return await pinned.send(notification)
        try:
            platform = await self._platforms.platform_of(
                notification.tenant_id, notification.user_id, token
            )
        except Exception:
            # The directory is only a routing hint: FCM can take any token, so a failed lookup
            # must not hold the notification back.
            log.warning("device platform lookup failed; routing as unknown", exc_info=True)
            platform = None
        sender, native = self._choose(platform, token)
        if sender is None:
            devices = f" for {platform.value} devices" if platform is not None else ""
            raise _permanent(f"no push service configured{devices}")
        try:
            return await sender.send(notification)
        except DeliveryFailed as exc:
            if native or exc.rejection is None:
                raise
            raise DeliveryFailed(
                exc.error_class,
                f"{exc.message} (the token was not for this service; the device is kept)",
                provider=exc.provider,
                retry_after=exc.retry_after,
                failovers=exc.failovers,
            ) from exc

    def _pinned_sender(self, notification: Notification) -> Sender | None:
        pinned = notification.pinned_provider
        if pinned is None:
            return None
        for sender in (self._ios, self._other):
            if sender is not None and pinned in getattr(sender, "provider_names", ()):
                return sender
        return None

    def _choose(self, platform: DevicePlatform | None, token: str) -> tuple[Sender | None, bool]:
        """The sender, and whether it is the device's own service (so that what it says about
        the token is to be believed)."""
        if platform is DevicePlatform.IOS and _APNS_TOKEN.fullmatch(token):
            if self._ios is not None:
                return self._ios, True
            return self._other, False
        if platform in (DevicePlatform.ANDROID, DevicePlatform.WEB):
            return self._other, True
        # Unknown platform, or an iOS device registered with an FCM token.
        if self._other is not None:
            return self._other, True
        return self._ios, False


def _permanent(message: str) -> DeliveryFailed:
    return DeliveryFailed(ErrorClass.PERMANENT, message, provider=ROUTING_PROVIDER)
