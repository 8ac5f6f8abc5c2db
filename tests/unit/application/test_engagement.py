"""TrackEngagement with fakes: validation, idempotence, and the inbox it shares with MarkAsRead."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta

import pytest

from application.errors import ConcurrentUpdate
from application.ports.inbox_notifier import InboxWakeups
from application.ports.repositories import InboxEventKind
from application.principal import Principal
from application.use_cases.engagement import TrackEngagement
from application.use_cases.inbox import GetUnreadCount, MarkAsRead
from domain.errors import NotFound, PreconditionFailed, ValidationFailed
from domain.notification import (
    Channel,
    DeliveryResult,
    EngagementAction,
    Notification,
    Status,
)
from tests.unit.application.fakes import T0, World, delivered, make_notification

ALICE = Principal("tenant-a", "orders", "key-a")
BOB = Principal("tenant-b", "billing", "key-b")
A = EngagementAction
NOW = T0 + timedelta(hours=1)


class RecordingNotifier:
    def __init__(self) -> None:
        self.published: list[tuple[str, str]] = []

    async def publish(self, tenant_id: str, user_id: str) -> None:
        self.published.append((tenant_id, user_id))

    def subscribe(self, tenant_id: str, user_id: str) -> AbstractAsyncContextManager[InboxWakeups]:
        @asynccontextmanager
        async def nothing() -> AsyncIterator[InboxWakeups]:
            raise NotImplementedError
            yield

        return nothing()


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


@pytest.fixture
def track(world: World, notifier: RecordingNotifier) -> TrackEngagement:
    world.clock.set(NOW)
    world.db.insert(
        delivered("inbox-1"),
        delivered("hook-1", channel=Channel.WEBHOOK),
        make_notification("queued-1"),
        delivered("bobs", tenant_id="tenant-b"),
    )
    return TrackEngagement(world.uow, world.clock, notifier)


def sent_webhook(nid: str) -> Notification:
    """Accepted by the provider but with no delivery receipt yet (SENT)."""
    n = make_notification(nid, channel=Channel.WEBHOOK)
    n.begin_attempt(T0)
    n.record_success(T0, DeliveryResult("webhook", "m-1"))
    return n


async def test_an_open_reads_an_in_app_notification_as_mark_as_read_would(
    world: World, track: TrackEngagement, notifier: RecordingNotifier
) -> None:
    reported = NOW - timedelta(minutes=5)
    tracked = await track.execute(ALICE, "inbox-1", A.OPENED, reported)

    assert tracked.recorded
    assert tracked.notification.status is Status.READ
    row = world.db.row("inbox-1")
    assert row.status is Status.READ
    assert row.engagements == {A.OPENED: reported}
    assert row.changed_at(Status.READ) == NOW
    events = world.db.inbox[("tenant-a", "user-1")]
    assert [(e.kind, e.read_ids, e.unread_count) for e in events] == [
        (InboxEventKind.NOTIFICATIONS_READ, ("inbox-1",), 0)
    ]
    assert notifier.published == [("tenant-a", "user-1")]
    assert await GetUnreadCount(world.uow).execute(ALICE, "user-1") == 0
    # MarkAsRead sees it as read already.
    assert await MarkAsRead(world.uow, world.clock).execute(ALICE, ["inbox-1"]) == 0


async def test_a_repeat_is_not_recorded_and_writes_nothing(
    world: World, track: TrackEngagement, notifier: RecordingNotifier
) -> None:
    await track.execute(ALICE, "hook-1", A.CLICKED, None)
    commits = world.db.commits
    version = world.db.row("hook-1").version

    again = await track.execute(ALICE, "hook-1", A.CLICKED, NOW - timedelta(minutes=1))

    assert again.recorded is False
    assert again.notification.engagements == {A.CLICKED: NOW}
    assert world.db.commits == commits
    assert world.db.row("hook-1").version == version


async def test_no_event_time_means_now(world: World, track: TrackEngagement) -> None:
    await track.execute(ALICE, "hook-1", A.DISMISSED, None)
    assert world.db.row("hook-1").engagements == {A.DISMISSED: NOW}


async def test_a_dismissal_leaves_the_inbox_alone(
    world: World, track: TrackEngagement, notifier: RecordingNotifier
) -> None:
    tracked = await track.execute(ALICE, "inbox-1", A.DISMISSED, None)
    assert tracked.notification.status is Status.DELIVERED
    assert ("tenant-a", "user-1") not in world.db.inbox
    assert notifier.published == []
    assert await GetUnreadCount(world.uow).execute(ALICE, "user-1") == 1


async def test_an_open_of_a_read_notification_is_recorded_without_an_inbox_event(
    world: World, track: TrackEngagement
) -> None:
    await MarkAsRead(world.uow, world.clock).execute(ALICE, ["inbox-1"])
    events = len(world.db.inbox[("tenant-a", "user-1")])
    tracked = await track.execute(ALICE, "inbox-1", A.CLICKED, None)
    assert tracked.recorded
    assert len(world.db.inbox[("tenant-a", "user-1")]) == events


async def test_a_delivery_receipt_moves_a_sent_webhook_to_delivered(
    world: World, track: TrackEngagement
) -> None:
    world.db.insert(sent_webhook("sent-1"))
    tracked = await track.execute(ALICE, "sent-1", A.DELIVERED, None)
    assert tracked.notification.status is Status.DELIVERED
    assert world.db.row("sent-1").status is Status.DELIVERED
    assert ("tenant-a", "user-1") not in world.db.inbox


async def test_a_notification_not_yet_sent_is_refused(world: World, track: TrackEngagement) -> None:
    with pytest.raises(PreconditionFailed) as info:
        await track.execute(ALICE, "queued-1", A.OPENED, None)
    assert info.value.reason == "NOT_SENT"
    assert world.db.row("queued-1").engagements == {}


@pytest.mark.parametrize("nid", ["nope", "bobs"])
async def test_unknown_and_other_tenants_ids_are_not_found(
    world: World, track: TrackEngagement, nid: str
) -> None:
    with pytest.raises(NotFound):
        await track.execute(ALICE, nid, A.OPENED, None)
    assert world.db.row("bobs").engagements == {}


@pytest.mark.parametrize(
    ("nid", "action", "event_time", "fields"),
    [
        ("", A.OPENED, None, ["id"]),
        ("hook-1", None, None, ["action"]),
        ("hook-1", A.OPENED, NOW + timedelta(minutes=2), ["event_time"]),
        ("  ", None, NOW + timedelta(days=1), ["id", "action", "event_time"]),
    ],
)
async def test_bad_input_names_every_field(
    track: TrackEngagement,
    nid: str,
    action: EngagementAction | None,
    event_time: datetime | None,
    fields: list[str],
) -> None:
    with pytest.raises(ValidationFailed) as info:
        await track.execute(ALICE, nid, action, event_time)
    assert [v.field for v in info.value.violations] == fields


async def test_a_little_clock_skew_is_not_the_future(world: World, track: TrackEngagement) -> None:
    skewed = NOW + timedelta(seconds=30)
    await track.execute(ALICE, "hook-1", A.OPENED, skewed)
    assert world.db.row("hook-1").engagements == {A.OPENED: skewed}


async def test_a_time_before_the_notification_existed_is_invalid(
    world: World, track: TrackEngagement
) -> None:
    created = world.db.row("hook-1").created_at
    for too_early in (created - timedelta(minutes=2), created - timedelta(days=365)):
        with pytest.raises(ValidationFailed) as info:
            await track.execute(ALICE, "hook-1", A.OPENED, too_early)
        assert [v.field for v in info.value.violations] == ["event_time"]
    assert world.db.row("hook-1").engagements == {}
    # The same little skew as for the future is tolerated.
    skewed = created - timedelta(seconds=30)
    await track.execute(ALICE, "hook-1", A.OPENED, skewed)
    assert world.db.row("hook-1").engagements == {A.OPENED: skewed}


async def test_a_concurrent_writer_is_retried_and_both_actions_stay(
    world: World, track: TrackEngagement, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another TrackEngagement commits a click between our load and our save.
    original = Notification.engage
    raced = False

    def engage_after_a_rival(self: Notification, *args: object) -> bool:
        nonlocal raced
        if not raced:
            raced = True
            rival = world.db.notifications["hook-1"]
            rival.engagements[A.CLICKED] = NOW
            rival.version += 1
        return original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Notification, "engage", engage_after_a_rival)
    tracked = await track.execute(ALICE, "hook-1", A.OPENED, None)

    assert tracked.recorded
    assert set(world.db.row("hook-1").engagements) == {A.CLICKED, A.OPENED}


async def test_a_writer_that_keeps_losing_gets_concurrent_update(
    world: World, track: TrackEngagement, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Notification.engage

    def always_raced(self: Notification, *args: object) -> bool:
        world.db.touch("hook-1")
        return original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Notification, "engage", always_raced)
    with pytest.raises(ConcurrentUpdate):
        await track.execute(ALICE, "hook-1", A.OPENED, None)
    assert world.db.row("hook-1").engagements == {}
