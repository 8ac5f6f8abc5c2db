"""The policy step through SendNotification and BulkSend, with fakes and a controllable clock:
the directory, opt-outs, quiet hours, caps and duplicates, each decision on the record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from application.errors import IdempotencyConflict
from application.principal import Principal
from application.use_cases.bulk_send import BulkSend
from application.use_cases.commands import (
    AddressInput,
    BulkRecipientInput,
    BulkSendCommand,
    SendNotificationCommand,
    TemplateInput,
)
from application.use_cases.policy_gate import PolicyGate
from application.use_cases.send_notification import SendNotification
from domain.errors import PreconditionFailed
from domain.notification import Address, Channel, Content, Priority, Status
from domain.policy import CapAction, Category, CategoryKind, Limits
from domain.recipient import (
    ChannelPreference,
    Preferences,
    Profile,
    QuietHours,
    Recipient,
)
from tests.unit.application.fakes import World

ALICE = Principal("tenant-a", "orders", "key-a")
# 12:00 UTC is 14:00 in Berlin.
NOON = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)


def command(n: int = 1, **kw: object) -> SendNotificationCommand:
    base: dict[str, object] = {
        "request_id": f"req-{n}",
        "user_id": "user-42",
        "channel": Channel.EMAIL,
        "category": "order_shipped",
        "content": Content("Shipped", "Your order is on its way"),
        "address": AddressInput("email", "ada@example.com"),
    }
    base.update(kw)
    return SendNotificationCommand(**base)  # type: ignore[arg-type]


def sender(world: World, dedup: timedelta = timedelta(0)) -> SendNotification:
    return SendNotification(
        world.uow, world.scheduler, world.preparer, world.clock, PolicyGate(dedup)
    )


def register(world: World, preferences: Preferences | None = None, **profile: object) -> None:
    fields: dict[str, object] = {
        "email": Address("email", "ada@example.com"),
        "time_zone": "Europe/Berlin",
        "locale": "de-CH",
    }
    fields.update(profile)
    r = Recipient.register("tenant-a", "user-42", Profile(**fields), preferences, NOON)  # type: ignore[arg-type]
    r.version = 1
    world.db.recipients[("tenant-a", "user-42")] = r


def define(world: World, category: Category) -> None:
    world.db.categories[("tenant-a", category.name)] = category


@pytest.fixture(autouse=True)
def at_noon(world: World) -> None:
    world.clock.set(NOON)


# -- the directory --------------------------------------------------------------------------


async def test_the_directory_supplies_the_address_and_the_template_locale(world: World) -> None:
    register(world)
    world.renderer.templates[("tenant-a", "shipped")] = ("Hi {name}", "Order {order}")
    outcome = await sender(world).execute(
        ALICE,
        command(
            address=None,
            content=None,
            template=TemplateInput("shipped", {"name": "Ada", "order": "7"}),
        ),
    )
    assert outcome.notification.address == Address("email", "ada@example.com")
    assert world.renderer.rendered[-1][1].locale == "de-CH"


async def test_an_explicit_address_and_locale_win_over_the_directory(world: World) -> None:
    register(world)
    world.renderer.templates[("tenant-a", "shipped")] = ("Hi {name}", "Order {order}")
    outcome = await sender(world).execute(
        ALICE,
        command(
            address=AddressInput("email", "other@example.com"),
            content=None,
            template=TemplateInput("shipped", {"name": "Ada", "order": "7"}, "fr"),
        ),
    )
    assert outcome.notification.address == Address("email", "other@example.com")
    assert world.renderer.rendered[-1][1].locale == "fr"


async def test_a_recipient_without_an_address_for_the_channel_is_a_failed_precondition(
    world: World,
) -> None:
    register(world)
    with pytest.raises(PreconditionFailed) as info:
        await sender(world).execute(ALICE, command(channel=Channel.PUSH, address=None))
    assert info.value.reason == "RECIPIENT_HAS_NO_ADDRESS"
    assert "device_token" in info.value.description
    assert world.db.notifications == {}


# -- opt-outs and quiet hours ---------------------------------------------------------------


async def test_an_opted_out_recipient_gets_a_suppressed_record_and_nothing_is_queued(
    world: World,
) -> None:
    register(world, Preferences(channels=(ChannelPreference("order_shipped", None, False),)))
    n = (await sender(world).execute(ALICE, command(address=None))).notification
    assert n.status is Status.SUPPRESSED
    assert "opted out" in n.status_reason
    assert world.db.row(n.id).status is Status.SUPPRESSED
    assert world.scheduler.enqueued == []


async def test_marketing_to_an_unsubscribed_recipient_is_suppressed(world: World) -> None:
    register(world, Preferences(marketing_opt_out=True))
    define(world, Category("promo", CategoryKind.MARKETING))
    n = (await sender(world).execute(ALICE, command(category="promo"))).notification
    assert (n.status, n.status_reason) == (
        Status.SUPPRESSED,
        "recipient unsubscribed from marketing",
    )
    transactional = (await sender(world).execute(ALICE, command(2))).notification
    assert transactional.status is Status.QUEUED


async def test_quiet_hours_hold_the_notification_until_they_end(world: World) -> None:
    register(world, Preferences(quiet_hours=QuietHours.parse("13:00", "15:30")))  # Berlin
    n = (await sender(world).execute(ALICE, command())).notification
    ends = datetime(2026, 6, 10, 13, 30, tzinfo=UTC)
    assert (n.status, n.due_at) == (Status.QUEUED, ends)
    assert "quiet hours" in n.history[-1].reason
    assert world.scheduler.enqueued[-1].due_at == ends


async def test_a_critical_notification_goes_out_in_quiet_hours(world: World) -> None:
    register(world, Preferences(quiet_hours=QuietHours.parse("13:00", "15:30")))
    n = (await sender(world).execute(ALICE, command(priority=Priority.CRITICAL))).notification
    assert (n.status, n.due_at) == (Status.QUEUED, NOON)
    assert "bypassed" in n.history[-1].reason


async def test_a_send_scheduled_into_quiet_hours_is_held_past_them(world: World) -> None:
    register(world, Preferences(quiet_hours=QuietHours.parse("22:00", "07:00")))
    scheduled = datetime(2026, 6, 10, 21, 0, tzinfo=UTC)  # 23:00 in Berlin
    n = (await sender(world).execute(ALICE, command(scheduled_at=scheduled))).notification
    assert n.due_at == datetime(2026, 6, 11, 5, 0, tzinfo=UTC)


# -- frequency caps -------------------------------------------------------------------------


async def test_a_cap_suppresses_the_one_over_it_and_frees_up_after_the_window(
    world: World,
) -> None:
    define(world, Category("order_shipped", limits=Limits(per_hour=2)))
    send = sender(world)
    first = (await send.execute(ALICE, command(1))).notification
    world.clock.advance(timedelta(minutes=30))
    second = (await send.execute(ALICE, command(2))).notification
    world.clock.advance(timedelta(minutes=29, seconds=59))
    third = (await send.execute(ALICE, command(3))).notification
    world.clock.advance(timedelta(seconds=1))  # exactly one hour after the first
    fourth = (await send.execute(ALICE, command(4))).notification
    assert [n.status for n in (first, second, third, fourth)] == [
        Status.QUEUED,
        Status.QUEUED,
        Status.SUPPRESSED,
        Status.QUEUED,
    ]
    assert "at most 2 per hour" in third.status_reason
    assert world.db.row(third.id).status is Status.SUPPRESSED
    assert [item.notification_id for item in world.scheduler.enqueued] == [
        first.id,
        second.id,
        fourth.id,
    ]


async def test_suppressed_notifications_do_not_count_against_the_cap(world: World) -> None:
    define(world, Category("order_shipped", limits=Limits(per_hour=1)))
    send = sender(world)
    await send.execute(ALICE, command(1))
    for n in range(2, 5):
        assert (await send.execute(ALICE, command(n))).notification.status is Status.SUPPRESSED
    world.clock.advance(timedelta(hours=1))
    assert (await send.execute(ALICE, command(9))).notification.status is Status.QUEUED


async def test_a_holding_category_queues_the_extra_one_for_when_the_cap_allows(
    world: World,
) -> None:
    define(
        world,
        Category("order_shipped", limits=Limits(per_hour=1), cap_action=CapAction.HOLD),
    )
    send = sender(world)
    await send.execute(ALICE, command(1))
    world.clock.advance(timedelta(minutes=10))
    held = (await send.execute(ALICE, command(2))).notification
    assert (held.status, held.due_at) == (Status.QUEUED, NOON + timedelta(hours=1))
    # A third waits behind the held one, not beside it.
    third = (await send.execute(ALICE, command(3))).notification
    assert third.due_at == NOON + timedelta(hours=2)


# -- duplicates -----------------------------------------------------------------------------


async def test_the_same_content_within_the_window_returns_the_earlier_notification(
    world: World,
) -> None:
    send = sender(world, dedup=timedelta(minutes=10))
    first = await send.execute(ALICE, command(1, address=AddressInput("email", "a@example.com")))
    world.clock.advance(timedelta(minutes=9, seconds=59))
    again = await send.execute(ALICE, command(2, address=AddressInput("email", "a@example.com")))
    assert again.deduplicated is True
    assert again.notification.id == first.notification.id
    assert len(world.db.notifications) == 1
    assert len(world.scheduler.enqueued) == 1
    # The folded request keeps its answer: its retry gets the same notification.
    retry = await send.execute(ALICE, command(2, address=AddressInput("email", "a@example.com")))
    assert (retry.replayed, retry.deduplicated) == (True, True)
    assert retry.notification.id == first.notification.id


async def test_the_window_edge_and_different_content_or_channel_are_not_duplicates(
    world: World,
) -> None:
    send = sender(world, dedup=timedelta(minutes=10))
    email = AddressInput("email", "a@example.com")
    await send.execute(ALICE, command(1, address=email))
    other_body = await send.execute(
        ALICE, command(2, address=email, content=Content("Shipped", "Another order"))
    )
    in_app = await send.execute(ALICE, command(3, channel=Channel.IN_APP, address=None))
    world.clock.advance(timedelta(minutes=10))
    after_window = await send.execute(ALICE, command(4, address=email))
    assert not other_body.deduplicated
    assert not in_app.deduplicated
    assert not after_window.deduplicated
    assert len(world.db.notifications) == 4


async def test_a_category_can_turn_duplicate_detection_on_or_off(world: World) -> None:
    define(world, Category("order_shipped", dedup_window=timedelta(0)))
    define(world, Category("otp", dedup_window=timedelta(seconds=30)))
    send = sender(world, dedup=timedelta(minutes=10))
    email = AddressInput("email", "a@example.com")
    await send.execute(ALICE, command(1, address=email))
    assert not (await send.execute(ALICE, command(2, address=email))).deduplicated
    await send.execute(ALICE, command(3, address=email, category="otp"))
    assert (await send.execute(ALICE, command(4, address=email, category="otp"))).deduplicated


async def test_a_suppressed_notification_is_not_a_duplicate_to_fold_into(world: World) -> None:
    register(world, Preferences(channels=(ChannelPreference("*", None, False),)))
    send = sender(world, dedup=timedelta(minutes=10))
    first = (await send.execute(ALICE, command(1))).notification
    assert first.status is Status.SUPPRESSED
    world.db.recipients[("tenant-a", "user-42")].preferences = Preferences()
    second = await send.execute(ALICE, command(2))
    assert not second.deduplicated
    assert second.notification.status is Status.QUEUED


async def test_locks_are_taken_only_where_a_count_decides(world: World) -> None:
    await sender(world).execute(ALICE, command(1))
    assert world.db.recipient_locks == []
    define(world, Category("digest", limits=Limits(per_day=5)))
    await sender(world).execute(ALICE, command(2, category="digest"))
    await sender(world, dedup=timedelta(minutes=1)).execute(ALICE, command(3))
    assert world.db.recipient_locks == [("tenant-a", "user-42")] * 2


async def test_bulk_locks_recipients_in_user_id_order(world: World) -> None:
    define(world, Category("news", limits=Limits(per_day=5)))
    await bulk_sender(world).execute(ALICE, bulk(["u3", "u1", "u2", "u1"]))
    assert world.db.recipient_locks == [("tenant-a", u) for u in ("u1", "u2", "u3")]


# -- bulk -----------------------------------------------------------------------------------


def bulk(recipients: list[str], **kw: object) -> BulkSendCommand:
    base: dict[str, object] = {
        "request_id": "bulk-1",
        "channel": Channel.IN_APP,
        "category": "news",
        "recipients": [BulkRecipientInput(u) for u in recipients],
        "content": Content("News", "This week"),
    }
    base.update(kw)
    return BulkSendCommand(**base)  # type: ignore[arg-type]


def bulk_sender(world: World, dedup: timedelta = timedelta(0)) -> BulkSend:
    return BulkSend(
        world.uow, world.scheduler, world.preparer, world.clock, world.ids, PolicyGate(dedup)
    )


async def test_bulk_folds_a_repeated_recipient_into_their_first_notification(
    world: World,
) -> None:
    outcome = await bulk_sender(world, timedelta(minutes=5)).execute(
        ALICE, bulk(["u1", "u2", "u1"])
    )
    first, _, repeat = outcome.results
    assert repeat.deduplicated is True
    assert repeat.notification is not None
    assert first.notification is not None
    assert repeat.notification.id == first.notification.id
    assert len(world.db.notifications) == 2
    assert len(world.scheduler.enqueued) == 2


async def test_bulk_counts_its_own_recipients_against_caps(world: World) -> None:
    define(world, Category("news", limits=Limits(per_day=1)))
    outcome = await bulk_sender(world).execute(ALICE, bulk(["u1", "u1", "u2"]))
    statuses = [r.notification.status for r in outcome.results if r.notification]
    assert statuses == [Status.QUEUED, Status.SUPPRESSED, Status.QUEUED]
    assert len(world.scheduler.enqueued) == 2


async def test_bulk_replay_returns_each_recipients_first_answer(world: World) -> None:
    send = bulk_sender(world, timedelta(minutes=5))
    first = await send.execute(ALICE, bulk(["u1", "u1"]))
    again = await send.execute(ALICE, bulk(["u1", "u1"]))
    assert [r.notification.id for r in again.results if r.notification] == [
        r.notification.id for r in first.results if r.notification
    ]
    assert [r.deduplicated for r in again.results] == [False, True]
    assert len(world.db.notifications) == 1


async def test_a_folded_request_keeps_its_answer_after_the_window_is_turned_off(
    world: World,
) -> None:
    define(world, Category("order_shipped", dedup_window=timedelta(minutes=10)))
    send = sender(world)
    first = await send.execute(ALICE, command(1))
    await send.execute(ALICE, command(2))
    define(world, Category("order_shipped", dedup_window=timedelta(0)))
    retry = await send.execute(ALICE, command(2))
    assert (retry.replayed, retry.deduplicated) == (True, True)
    assert retry.notification.id == first.notification.id
    assert len(world.db.notifications) == 1
    # The folded request_id is taken: another request under it is refused.
    with pytest.raises(IdempotencyConflict):
        await send.execute(ALICE, command(2, content=Content("Other", "content")))
