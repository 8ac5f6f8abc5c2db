"""Fallback chains of channels and what providers say about addresses, through the use cases
with fakes: SendNotification resolves the chain, DeliverNotification walks it, records
failed-over attempts, and acts on a dead token, a gone endpoint or an opted-out number."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from application.errors import IdempotencyConflict
from application.ports.repositories import InboxEventKind, Suppression
from application.ports.sender import Delivered, DeliveryFailed, FailedOver
from application.principal import Principal
from application.use_cases.commands import AddressInput, SendNotificationCommand
from application.use_cases.deliver_notification import DeliverNotification
from application.use_cases.policy_gate import PolicyGate
from application.use_cases.send_notification import SendNotification
from domain.errors import PreconditionFailed, ValidationFailed
from domain.notification import (
    Address,
    AddressRejection,
    AttemptOutcome,
    Channel,
    Content,
    DeliveryResult,
    ErrorClass,
    Notification,
    RetryPolicy,
    Status,
)
from domain.recipient import (
    ChannelPreference,
    DevicePlatform,
    Preferences,
    Profile,
    Recipient,
    WebhookEndpoint,
)
from tests.unit.application.fakes import FakeSender, World, make_world

ALICE = Principal("tenant-a", "orders", "key-a")
NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
ALL = frozenset(Channel)
LEASE = timedelta(seconds=30)


@pytest.fixture
def world() -> World:
    w = make_world(ALL)
    w.clock.set(NOW)
    return w


def register(
    world: World,
    *,
    email: str | None = "ada@example.com",
    phone: str | None = "+14155550123",
    devices: tuple[str, ...] = ("token-1",),
    preferences: Preferences | None = None,
) -> None:
    profile = Profile(
        email=Address("email", email) if email else None,
        phone=Address("phone", phone) if phone else None,
        devices=tuple((DevicePlatform.ANDROID, d) for d in devices),
    )
    r = Recipient.register("tenant-a", "user-42", profile, preferences, NOW)
    r.version = 1
    world.db.recipients[("tenant-a", "user-42")] = r


async def send(world: World, *fallbacks: Channel, **kw: object) -> Notification:
    base: dict[str, object] = {
        "request_id": "req-1",
        "user_id": "user-42",
        "channel": Channel.PUSH,
        "category": "order_shipped",
        "content": Content("Shipped", "Your order is on its way"),
        "fallback_channels": fallbacks,
    }
    base.update(kw)
    outcome = await SendNotification(
        world.uow, world.scheduler, world.preparer, world.clock, PolicyGate()
    ).execute(ALICE, SendNotificationCommand(**base))  # type: ignore[arg-type]
    return outcome.notification


async def deliver_once(world: World, *senders: FakeSender) -> Status | None:
    [claim] = await world.scheduler.claim(1, world.clock.now(), LEASE)
    use_case = DeliverNotification(
        world.uow,
        world.scheduler,
        {s.channel: s for s in senders},
        {c: RetryPolicy(max_attempts=3) for c in Channel},
        world.clock,
        random=lambda: 0.5,
    )
    return await use_case.execute(claim)


# -- accepting a chain -------------------------------------------------------------------------


async def test_the_chain_is_resolved_from_the_directory_at_accept_time(world: World) -> None:
    register(world)
    n = await send(world, Channel.EMAIL, Channel.SMS)

    assert (n.channel, n.address) == (Channel.PUSH, Address("device_token", "token-1"))
    assert [(r.channel, r.address) for r in n.fallbacks] == [
        (Channel.EMAIL, Address("email", "ada@example.com")),
        (Channel.SMS, Address("phone", "+14155550123")),
    ]
    assert world.db.row(n.id).fallbacks == n.fallbacks, "the chain is stored"


async def test_a_channel_without_an_address_is_passed_over_and_the_record_says_why(
    world: World,
) -> None:
    register(world, devices=())
    n = await send(world, Channel.EMAIL)

    assert (n.status, n.channel) == (Status.QUEUED, Channel.EMAIL)
    assert "PUSH skipped: recipient has no usable device_token" in n.status_reason
    assert n.fallbacks == []


async def test_no_reachable_channel_in_the_chain_is_failed_precondition(world: World) -> None:
    register(world, devices=(), email=None)
    with pytest.raises(PreconditionFailed) as caught:
        await send(world, Channel.EMAIL)
    assert caught.value.reason == "RECIPIENT_HAS_NO_ADDRESS"
    assert "PUSH skipped" in caught.value.description
    assert "EMAIL skipped" in caught.value.description
    assert world.db.notifications == {}


async def test_an_opted_out_channel_is_passed_over(world: World) -> None:
    register(
        world,
        preferences=Preferences(channels=(ChannelPreference("*", Channel.PUSH, enabled=False),)),
    )
    n = await send(world, Channel.EMAIL)
    assert (n.status, n.channel) == (Status.QUEUED, Channel.EMAIL)
    assert "PUSH skipped" in n.status_reason


async def test_a_suppressed_number_is_suppressed_or_passed_over(world: World) -> None:
    register(world)
    phone = Address("phone", "+14155550123")
    world.db.suppressions[("tenant-a", "phone", phone.value)] = Suppression(
        "tenant-a", phone, "twilio: replied STOP", NOW
    )
    alone = await send(world, channel=Channel.SMS, request_id="r-1")
    assert alone.status is Status.SUPPRESSED
    assert "suppressed (twilio: replied STOP)" in alone.status_reason

    chained = await send(world, Channel.EMAIL, channel=Channel.SMS, request_id="r-2")
    assert (chained.status, chained.channel) == (Status.QUEUED, Channel.EMAIL)


async def test_an_unconfigured_fallback_channel_is_named(world: World) -> None:
    world.preparer = make_world(frozenset({Channel.PUSH})).preparer
    register(world)
    with pytest.raises(PreconditionFailed) as caught:
        await send(world, Channel.EMAIL)
    assert caught.value.subject == "fallback_channels[0]"
    assert caught.value.reason == "CHANNEL_NOT_CONFIGURED"


async def test_a_retry_of_the_request_with_another_chain_is_a_conflict(world: World) -> None:
    register(world)
    await send(world, Channel.EMAIL)
    with pytest.raises(IdempotencyConflict):
        await send(world, Channel.SMS)


# -- walking the chain ------------------------------------------------------------------------


async def test_a_permanent_push_failure_falls_back_to_email_and_the_record_shows_it(
    world: World,
) -> None:
    register(world)
    n = await send(world, Channel.EMAIL)
    push = FakeSender(
        Channel.PUSH,
        DeliveryFailed(
            ErrorClass.PERMANENT,
            "UNREGISTERED",
            provider="fcm",
            rejection=AddressRejection.GONE,
        ),
    )
    email = FakeSender(Channel.EMAIL, DeliveryResult("smtp", "q-1"))

    assert await deliver_once(world, push, email) is Status.QUEUED
    assert await deliver_once(world, push, email) is Status.SENT

    row = world.db.row(n.id)
    assert [(a.channel, a.provider, a.outcome) for a in row.attempts] == [
        ("PUSH", "fcm", AttemptOutcome.PERMANENT_FAILURE),
        ("EMAIL", "smtp", AttemptOutcome.ACCEPTED),
    ]
    assert any("falling back to EMAIL" in h.reason for h in row.history)
    assert email.sent[0].address == Address("email", "ada@example.com")
    recipient = world.db.recipients[("tenant-a", "user-42")]
    assert recipient.devices[0].invalidated_at is not None, "the dead token left the record"


async def test_failed_over_providers_become_attempts(world: World) -> None:
    register(world)
    n = await send(world)
    t = world.clock.now()
    push = FakeSender(
        Channel.PUSH,
        Delivered(
            DeliveryResult("fcm-backup", "m-2"),
            failovers=(FailedOver("fcm", "HTTP 503", t, t + timedelta(milliseconds=20)),),
        ),
    )
    assert await deliver_once(world, push) is Status.SENT
    row = world.db.row(n.id)
    assert [(a.provider, a.outcome) for a in row.attempts] == [
        ("fcm", AttemptOutcome.FAILED_OVER),
        ("fcm-backup", AttemptOutcome.ACCEPTED),
    ]
    assert row.attempts[0].error_message == "HTTP 503"


async def test_an_unsubscribed_number_is_suppressed_for_the_tenant(world: World) -> None:
    register(world)
    await send(world, channel=Channel.SMS)
    sms = FakeSender(
        Channel.SMS,
        DeliveryFailed(
            ErrorClass.PERMANENT,
            "21610: unsubscribed",
            provider="twilio",
            rejection=AddressRejection.UNSUBSCRIBED,
        ),
    )
    assert await deliver_once(world, sms) is Status.FAILED
    [suppression] = world.db.suppressions.values()
    assert suppression.address == Address("phone", "+14155550123")
    assert "twilio" in suppression.reason

    again = await send(world, channel=Channel.SMS, request_id="req-2")
    assert again.status is Status.SUPPRESSED


async def test_a_gone_webhook_endpoint_is_disabled(world: World) -> None:
    profile = Profile(webhook=WebhookEndpoint("https://hooks.example.com/a"))
    r = Recipient.register("tenant-a", "user-42", profile, None, NOW)
    r.version = 1
    world.db.recipients[("tenant-a", "user-42")] = r
    await send(world, channel=Channel.WEBHOOK)
    hook = FakeSender(
        Channel.WEBHOOK,
        DeliveryFailed(
            ErrorClass.PERMANENT, "HTTP 410", provider="webhook", rejection=AddressRejection.GONE
        ),
    )
    assert await deliver_once(world, hook) is Status.FAILED
    webhook = world.db.recipients[("tenant-a", "user-42")].webhook
    assert webhook is not None
    assert webhook.disabled_at is not None


async def test_a_delivered_in_app_notification_enters_the_inbox_log(world: World) -> None:
    n = await send(world, channel=Channel.IN_APP)
    inbox = FakeSender(Channel.IN_APP, DeliveryResult("inbox", n.id, delivered=True))
    assert await deliver_once(world, inbox) is Status.DELIVERED
    [event] = world.db.inbox[("tenant-a", "user-42")]
    assert (event.kind, event.notification_id, event.unread_count, event.seq) == (
        InboxEventKind.NOTIFICATION_DELIVERED,
        n.id,
        1,
        1,
    )


async def test_an_explicit_address_chain_uses_it_for_the_first_channel_only(world: World) -> None:
    register(world)
    n = await send(
        world, Channel.EMAIL, channel=Channel.SMS, address=AddressInput("phone", "+4915112345678")
    )
    assert n.address == Address("phone", "+4915112345678")
    assert n.fallbacks[0].address == Address("email", "ada@example.com")


@pytest.mark.parametrize(
    ("fallbacks", "field"),
    [
        ((Channel.EMAIL, Channel.PUSH), "fallback_channels[1]"),
        ((Channel.EMAIL, Channel.EMAIL), "fallback_channels[1]"),
        ((Channel.PUSH,), "fallback_channels[0]"),
        (
            (Channel.EMAIL, Channel.SMS, Channel.IN_APP, Channel.WEBHOOK, Channel.EMAIL),
            "fallback_channels",
        ),
    ],
)
async def test_a_chain_repeating_a_channel_or_too_long_is_refused_before_anything_is_stored(
    world: World, fallbacks: tuple[Channel, ...], field: str
) -> None:
    register(world, devices=())
    with pytest.raises(ValidationFailed) as caught:
        await send(world, *fallbacks)
    assert field in [v.field for v in caught.value.violations]
    assert world.db.notifications == {}
