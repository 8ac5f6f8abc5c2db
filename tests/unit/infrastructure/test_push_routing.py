"""Which push service a device goes to, and what the directory says about its platform."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from application.ports.sender import Delivered, DeliveryFailed
from domain.notification import (
    Address,
    AddressRejection,
    Channel,
    Content,
    DeliveryResult,
    ErrorClass,
    NewNotification,
    Notification,
    Priority,
    RetryPolicy,
)
from domain.recipient import DevicePlatform, Profile, Recipient
from infrastructure.senders.push import DevicePlatforms, PlatformRoutedSender
from tests.unit.application.fakes import FakeMonotonic, FakeUnitOfWorkFactory

NOW = datetime(2025, 1, 1, tzinfo=UTC)
APNS_TOKEN = "0f" * 32


def push_to(token: str) -> Notification:
    return Notification.accept(
        NewNotification(
            request_id=f"r-{token}",
            user_id="u1",
            channel=Channel.PUSH,
            priority=Priority.HIGH,
            category="test",
            content=Content("t", "b"),
            address=Address("device_token", token),
        ),
        id="n-1",
        tenant_id="tenant-a",
        caller="tests",
        fingerprint="fp",
        now=NOW,
    )


class Recording:
    channel = Channel.PUSH

    def __init__(self, name: str, failure: DeliveryFailed | None = None) -> None:
        self.name = name
        self.failure = failure
        self.sent: list[str] = []

    async def send(self, notification: Notification) -> Delivered:
        assert notification.address is not None
        self.sent.append(notification.address.value)
        if self.failure is not None:
            raise self.failure
        return Delivered(DeliveryResult(self.name, "id-1"))


class Known:
    def __init__(self, platforms: dict[str, DevicePlatform]) -> None:
        self.platforms = platforms

    async def platform_of(self, tenant_id: str, user_id: str, token: str) -> DevicePlatform | None:
        return self.platforms.get(token)


class Broken:
    async def platform_of(self, tenant_id: str, user_id: str, token: str) -> DevicePlatform | None:
        raise ConnectionError("database unreachable")


PLATFORMS = Known(
    {
        APNS_TOKEN: DevicePlatform.IOS,
        "fcm:ios-app-token": DevicePlatform.IOS,
        "android-token": DevicePlatform.ANDROID,
        "web-token": DevicePlatform.WEB,
    }
)


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (APNS_TOKEN, "apns"),
        ("fcm:ios-app-token", "fcm"),
        ("android-token", "fcm"),
        ("web-token", "fcm"),
        ("unknown-token", "fcm"),
    ],
)
async def test_ios_devices_with_apns_tokens_go_to_apns_all_else_to_fcm(
    token: str, expected: str
) -> None:
    apns, fcm = Recording("apns"), Recording("fcm")

    delivered = await PlatformRoutedSender(PLATFORMS, ios=apns, other=fcm).send(push_to(token))

    assert delivered.result.provider == expected
    assert (apns.sent, fcm.sent) == (([token], []) if expected == "apns" else ([], [token]))


async def test_ios_devices_go_to_fcm_when_apns_is_not_configured() -> None:
    fcm = Recording("fcm")

    delivered = await PlatformRoutedSender(PLATFORMS, ios=None, other=fcm).send(push_to(APNS_TOKEN))

    assert delivered.result.provider == "fcm"


async def test_unknown_devices_go_to_apns_when_fcm_is_not_configured() -> None:
    apns = Recording("apns")

    await PlatformRoutedSender(PLATFORMS, ios=apns, other=None).send(push_to("unknown-token"))

    assert apns.sent == ["unknown-token"]


@pytest.mark.parametrize("token", ["android-token", "web-token"])
async def test_android_and_web_devices_never_go_to_apns(token: str) -> None:
    apns = Recording("apns")

    with pytest.raises(DeliveryFailed) as caught:
        await PlatformRoutedSender(PLATFORMS, ios=apns, other=None).send(push_to(token))

    assert caught.value.error_class is ErrorClass.PERMANENT
    assert "no push service configured" in caught.value.message
    assert apns.sent == []


async def test_nothing_configured_is_permanent() -> None:
    with pytest.raises(DeliveryFailed) as caught:
        await PlatformRoutedSender(PLATFORMS, ios=None, other=None).send(push_to(APNS_TOKEN))

    assert caught.value.error_class is ErrorClass.PERMANENT


def gone(provider: str) -> DeliveryFailed:
    return DeliveryFailed(
        ErrorClass.PERMANENT,
        "HTTP 400 BadDeviceToken",
        provider=provider,
        rejection=AddressRejection.GONE,
    )


async def test_a_gone_token_from_the_devices_own_service_is_passed_on() -> None:
    apns = Recording("apns", gone("apns"))

    with pytest.raises(DeliveryFailed) as caught:
        await PlatformRoutedSender(PLATFORMS, ios=apns, other=None).send(push_to(APNS_TOKEN))

    assert caught.value.rejection is AddressRejection.GONE


@pytest.mark.parametrize(
    ("token", "ios", "other"),
    [
        # An APNs token that reached FCM only because APNs is not configured.
        (APNS_TOKEN, None, Recording("fcm", gone("fcm"))),
        # A token of unknown platform that reached APNs only because FCM is not configured.
        ("unknown-token", Recording("apns", gone("apns")), None),
    ],
)
async def test_a_gone_token_from_a_stand_in_service_keeps_the_device(
    token: str, ios: Recording | None, other: Recording | None
) -> None:
    with pytest.raises(DeliveryFailed) as caught:
        await PlatformRoutedSender(PLATFORMS, ios=ios, other=other).send(push_to(token))

    assert caught.value.error_class is ErrorClass.PERMANENT
    assert caught.value.rejection is None
    assert caught.value.provider in ("apns", "fcm")


async def test_a_failed_platform_lookup_routes_as_unknown() -> None:
    apns, fcm = Recording("apns"), Recording("fcm")

    await PlatformRoutedSender(Broken(), ios=apns, other=fcm).send(push_to(APNS_TOKEN))

    assert fcm.sent == [APNS_TOKEN]


class Chain(Recording):
    """A channel-level sender that names its providers, as FailoverSender does."""

    @property
    def provider_names(self) -> tuple[str, ...]:
        return (self.name,)


async def test_a_notification_pinned_to_apns_stays_with_apns_whatever_the_directory_says() -> None:
    apns, fcm = Chain("apns"), Chain("fcm")
    n = push_to(APNS_TOKEN)
    n.begin_attempt(NOW)
    n.record_failure(
        NOW,
        provider="apns",
        error_class=ErrorClass.MAYBE_ACCEPTED,
        message="no answer",
        policy=RetryPolicy(),
        random=lambda: 0.5,
    )
    n.begin_attempt(n.due_at)

    # The lookup fails, which alone would route the token to FCM.
    await PlatformRoutedSender(Broken(), ios=apns, other=fcm).send(n)

    assert (apns.sent, fcm.sent) == ([APNS_TOKEN], [])


async def test_no_device_token_is_permanent() -> None:
    notification = push_to("x")
    notification.address = None

    with pytest.raises(DeliveryFailed) as caught:
        await PlatformRoutedSender(PLATFORMS, ios=None, other=Recording("fcm")).send(notification)

    assert caught.value.error_class is ErrorClass.PERMANENT


# -- DevicePlatforms ----------------------------------------------------------------------------


def directory(*devices: tuple[DevicePlatform, str]) -> FakeUnitOfWorkFactory:
    uow = FakeUnitOfWorkFactory()
    r = Recipient.register("tenant-a", "u1", Profile(devices=devices), None, NOW)
    r.version = 1
    uow.db.recipients[("tenant-a", "u1")] = r
    return uow


async def test_platforms_come_from_the_recipients_devices() -> None:
    uow = directory((DevicePlatform.IOS, APNS_TOKEN), (DevicePlatform.ANDROID, "android-token"))
    platforms = DevicePlatforms(uow)

    assert await platforms.platform_of("tenant-a", "u1", APNS_TOKEN) is DevicePlatform.IOS
    assert await platforms.platform_of("tenant-a", "u1", "android-token") is DevicePlatform.ANDROID
    assert await platforms.platform_of("tenant-a", "u1", "other-token") is None
    assert await platforms.platform_of("tenant-a", "u2", APNS_TOKEN) is None
    assert await platforms.platform_of("tenant-b", "u1", APNS_TOKEN) is None


async def test_platforms_are_cached_for_a_minute() -> None:
    uow = directory((DevicePlatform.IOS, APNS_TOKEN))
    clock = FakeMonotonic()
    platforms = DevicePlatforms(uow, monotonic=clock)

    await platforms.platform_of("tenant-a", "u1", APNS_TOKEN)
    await platforms.platform_of("tenant-a", "u1", APNS_TOKEN)
    assert uow.opened == 1

    clock.value += 61
    uow.db.recipients.clear()
    assert await platforms.platform_of("tenant-a", "u1", APNS_TOKEN) is None
    assert uow.opened == 2
