"""SendNotification: validate, persist once per request_id, queue."""

from __future__ import annotations

from datetime import timedelta

import pytest

from application.errors import IdempotencyConflict
from application.ports.scheduler import QueueItem
from application.principal import Principal
from application.use_cases.commands import AddressInput, SendNotificationCommand, TemplateInput
from application.use_cases.manage_notification import CancelNotification
from application.use_cases.send_notification import SendNotification
from domain.errors import PreconditionFailed, ValidationFailed
from domain.notification import Channel, Content, Priority, Status
from tests.unit.application.fakes import T0, World

ALICE = Principal("tenant-a", "orders", "key-a")
BOB = Principal("tenant-b", "billing", "key-b")


def command(**kw: object) -> SendNotificationCommand:
    base: dict[str, object] = {
        "request_id": "req-1",
        "user_id": "user-42",
        "channel": Channel.EMAIL,
        "category": "order_shipped",
        "priority": Priority.HIGH,
        "content": Content("Shipped", "Your order is on its way"),
        "address": AddressInput("email", "user@example.com"),
    }
    base.update(kw)
    return SendNotificationCommand(**base)  # type: ignore[arg-type]


def use_case(world: World) -> SendNotification:
    return SendNotification(world.uow, world.scheduler, world.preparer, world.clock)


def fields(error: ValidationFailed) -> list[str]:
    return [v.field for v in error.violations]


async def test_accepted_notification_is_queued_and_enqueued(world: World) -> None:
    outcome = await use_case(world).execute(ALICE, command())
    n = outcome.notification
    assert outcome.replayed is False
    assert n.status is Status.QUEUED
    assert (n.tenant_id, n.caller, n.request_id) == ("tenant-a", "orders", "req-1")
    assert world.scheduler.enqueued == [QueueItem(n.id, Priority.HIGH, T0)]
    stored = world.db.row(n.id)
    assert stored.status is Status.QUEUED
    assert stored.version == 1
    assert world.db.commits == 1


async def test_scheduled_notification_is_enqueued_for_its_time(world: World) -> None:
    at = T0 + timedelta(hours=3)
    n = (await use_case(world).execute(ALICE, command(scheduled_at=at))).notification
    assert n.due_at == at
    assert world.scheduler.enqueued == [QueueItem(n.id, Priority.HIGH, at)]


async def test_replay_returns_the_first_notification_and_writes_nothing(world: World) -> None:
    send = use_case(world)
    first = (await send.execute(ALICE, command())).notification
    row = world.db.row(first.id)
    world.clock.advance(timedelta(seconds=30))

    again = await send.execute(ALICE, command())

    assert again.replayed is True
    assert again.notification.id == first.id
    assert again.notification.created_at == T0
    assert list(world.db.notifications) == [first.id]
    assert world.db.row(first.id) == row
    assert world.db.commits == 1
    # Re-enqueueing on a replay is deliberate (it heals a lost enqueue) and idempotent per id.
    assert {i.notification_id for i in world.scheduler.enqueued} == {first.id}


async def test_replay_of_a_cancelled_notification_does_not_requeue_it(world: World) -> None:
    send = use_case(world)
    first = (await send.execute(ALICE, command())).notification
    await CancelNotification(world.uow, world.scheduler, world.clock).execute(ALICE, first.id)
    world.scheduler.enqueued.clear()

    again = await send.execute(ALICE, command())

    assert again.replayed is True
    assert again.notification.status is Status.CANCELLED
    assert world.scheduler.enqueued == []


async def test_same_request_id_for_another_request_is_a_conflict(world: World) -> None:
    send = use_case(world)
    first = (await send.execute(ALICE, command())).notification
    world.scheduler.enqueued.clear()

    with pytest.raises(IdempotencyConflict) as info:
        await send.execute(ALICE, command(content=Content("Shipped", "A different body")))

    assert info.value.existing_id == first.id
    assert info.value.request_id == "req-1"
    assert list(world.db.notifications) == [first.id]
    assert world.scheduler.enqueued == []


async def test_request_ids_are_per_tenant(world: World) -> None:
    send = use_case(world)
    a = await send.execute(ALICE, command())
    b = await send.execute(BOB, command())
    assert b.replayed is False
    assert a.notification.id != b.notification.id
    assert len(world.db.notifications) == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"address": AddressInput("email", "not-an-email")}, "address.email"),
        ({"user_id": ""}, "user_id"),
        ({"category": " "}, "category"),
        ({"content": Content("", "")}, "content"),
        ({"expires_at": T0 - timedelta(seconds=1)}, "expires_at"),
        ({"request_id": ""}, "request_id"),
    ],
)
async def test_invalid_input_writes_nothing_and_keeps_the_request_id_free(
    world: World, change: dict[str, object], field: str
) -> None:
    send = use_case(world)
    with pytest.raises(ValidationFailed) as info:
        await send.execute(ALICE, command(**change))
    assert field in fields(info.value)
    assert world.db.notifications == {}
    assert world.db.commits == 0
    assert world.scheduler.calls == []

    fixed = await send.execute(ALICE, command())
    assert fixed.replayed is False
    assert fixed.notification.status is Status.QUEUED


async def test_every_bad_field_is_reported_at_once(world: World) -> None:
    with pytest.raises(ValidationFailed) as info:
        await use_case(world).execute(
            ALICE, command(user_id="", address=AddressInput("email", "nope"))
        )
    assert {"user_id", "address.email"} <= set(fields(info.value))


async def test_no_address_and_no_directory_entry_is_a_failed_precondition(world: World) -> None:
    with pytest.raises(PreconditionFailed) as info:
        await use_case(world).execute(ALICE, command(address=None))
    assert info.value.reason == "RECIPIENT_HAS_NO_ADDRESS"
    assert info.value.subject == "address"
    assert world.db.notifications == {}
    assert world.db.commits == 0


async def test_unconfigured_channel_is_a_failed_precondition(world: World) -> None:
    with pytest.raises(PreconditionFailed) as info:
        await use_case(world).execute(
            ALICE, command(channel=Channel.SMS, address=AddressInput("phone", "+14155550123"))
        )
    assert info.value.reason == "CHANNEL_NOT_CONFIGURED"
    assert info.value.subject == "channel"
    assert "SMS" in info.value.description
    assert world.db.notifications == {}
    assert world.scheduler.calls == []


async def test_content_and_template_together_are_refused(world: World) -> None:
    with pytest.raises(ValidationFailed) as info:
        await use_case(world).execute(ALICE, command(template=TemplateInput("welcome")))
    assert fields(info.value) == ["content"]
    assert "not both" in info.value.violations[0].description
    assert world.db.notifications == {}


async def test_neither_content_nor_template_is_refused(world: World) -> None:
    with pytest.raises(ValidationFailed) as info:
        await use_case(world).execute(ALICE, command(content=None))
    assert fields(info.value) == ["content"]
    assert world.db.notifications == {}


async def test_template_is_rendered_and_recorded(world: World) -> None:
    world.renderer.templates[("tenant-a", "shipped")] = ("Hi {name}", "Order {order} shipped")
    n = (
        await use_case(world).execute(
            ALICE,
            command(
                content=None,
                template=TemplateInput("shipped", {"name": "Ada", "order": 7}, "en-GB"),
            ),
        )
    ).notification
    assert n.content == Content("Hi Ada", "Order 7 shipped")
    assert (n.template_name, n.template_version, n.locale) == ("shipped", 1, "en-GB")
    assert world.db.row(n.id).content == Content("Hi Ada", "Order 7 shipped")


async def test_missing_template_variable_names_it(world: World) -> None:
    world.renderer.templates[("tenant-a", "shipped")] = ("Hi {name}", "body")
    with pytest.raises(ValidationFailed) as info:
        await use_case(world).execute(
            ALICE, command(content=None, template=TemplateInput("shipped"))
        )
    assert fields(info.value) == ["template.variables.name"]
    assert world.db.notifications == {}


async def test_templates_are_per_tenant(world: World) -> None:
    world.renderer.templates[("tenant-a", "shipped")] = ("t", "b")
    with pytest.raises(ValidationFailed) as info:
        await use_case(world).execute(BOB, command(content=None, template=TemplateInput("shipped")))
    assert fields(info.value) == ["template.name"]
