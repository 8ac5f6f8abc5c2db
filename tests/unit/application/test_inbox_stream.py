"""StreamInbox (cursor, wake-ups, resume without gap or repeat), the inbox events MarkAsRead
logs, and the pruning of the log."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from application.ports.repositories import InboxEventKind
from application.principal import Principal
from application.use_cases.inbox import MarkAsRead, PruneInboxEvents
from application.use_cases.inbox_stream import InboxCursors, InboxUpdate, StreamInbox
from domain.errors import NotFound, ValidationFailed
from tests.unit.application.fakes import T0, World, delivered

ALICE = Principal("tenant-a", "orders", "key-a")
BOB = Principal("tenant-b", "billing", "key-b")
USER = "user-1"
# Long enough that an update arriving within a test's wait came from a wake-up, not a poll.
NEVER = 3600.0
WAIT = 2.0


class FakeWakeups:
    def __init__(self) -> None:
        self.flag = asyncio.Event()

    async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109
        try:
            await asyncio.wait_for(self.flag.wait(), timeout)
        except TimeoutError:
            return False
        self.flag.clear()
        return True


class FakeNotifier:
    """In-process wake-ups; ``lossy`` drops every publish (as when Redis is away)."""

    def __init__(self, *, lossy: bool = False) -> None:
        self.lossy = lossy
        self.published: list[tuple[str, str]] = []
        self.subscribers: dict[tuple[str, str], list[FakeWakeups]] = {}

    async def publish(self, tenant_id: str, user_id: str) -> None:
        self.published.append((tenant_id, user_id))
        if not self.lossy:
            for wakeups in self.subscribers.get((tenant_id, user_id), []):
                wakeups.flag.set()

    @contextlib.asynccontextmanager
    async def subscribe(self, tenant_id: str, user_id: str) -> AsyncIterator[FakeWakeups]:
        wakeups = FakeWakeups()
        self.subscribers.setdefault((tenant_id, user_id), []).append(wakeups)
        try:
            yield wakeups
        finally:
            self.subscribers[(tenant_id, user_id)].remove(wakeups)

    def count(self) -> int:
        return sum(len(s) for s in self.subscribers.values())


class Stream:
    """One open stream; closed by the fixture so no generator outlives its test."""

    def __init__(self, updates: AsyncIterator[InboxUpdate], stop: asyncio.Event) -> None:
        self.updates = updates
        self.stop = stop

    async def next(self) -> InboxUpdate:
        return await asyncio.wait_for(anext(self.updates), WAIT)

    async def take(self, n: int) -> list[InboxUpdate]:
        return [await self.next() for _ in range(n)]


@pytest.fixture
def notifier() -> FakeNotifier:
    return FakeNotifier()


@pytest.fixture
async def streams() -> AsyncIterator[list[Stream]]:
    opened: list[Stream] = []
    yield opened
    for stream in opened:
        await stream.updates.aclose()  # type: ignore[attr-defined]


def open_stream(
    world: World,
    notifier: FakeNotifier,
    streams: list[Stream],
    cursor: str = "",
    *,
    principal: Principal = ALICE,
    user: str = USER,
    poll_interval: float = NEVER,
    page_size: int = 100,
) -> Stream:
    use_case = StreamInbox(world.uow, notifier, poll_interval=poll_interval, page_size=page_size)
    stop = asyncio.Event()
    stream = Stream(use_case.execute(principal, user, cursor, stop), stop)
    streams.append(stream)
    return stream


async def deliver(
    world: World, notifier: FakeNotifier, nid: str, *, user: str = USER, tenant: str = "tenant-a"
) -> None:
    """What DeliverNotification does for IN_APP: deliver and log in one transaction, then wake."""
    async with world.uow() as uow:
        await uow.notifications.add(delivered(nid, user_id=user, tenant_id=tenant))
        await uow.inbox.append(
            tenant,
            user,
            InboxEventKind.NOTIFICATION_DELIVERED,
            world.clock.now(),
            notification_id=nid,
        )
        await uow.commit()
    await notifier.publish(tenant, user)


def seq_of(cursor: str) -> int:
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    return int(raw.split(":")[1])


# -- a fresh stream ----------------------------------------------------------------------------


async def test_a_fresh_stream_starts_with_the_unread_count_at_the_head(
    world: World, notifier: FakeNotifier, streams: list[Stream]
) -> None:
    await deliver(world, notifier, "n-1")
    await deliver(world, notifier, "n-2")
    stream = open_stream(world, notifier, streams)
    first = await stream.next()
    assert (first.kind, first.unread_count, first.notification) == (
        InboxEventKind.UNREAD_COUNT,
        2,
        None,
    )
    assert seq_of(first.cursor) == 2
    # Nothing already counted is sent again: the next update is the next change.
    await deliver(world, notifier, "n-3")
    update = await stream.next()
    assert update.kind is InboxEventKind.NOTIFICATION_DELIVERED
    assert update.notification is not None
    assert update.notification.id == "n-3"
    assert update.unread_count == 3


async def test_a_user_without_an_inbox_starts_at_zero(
    world: World, notifier: FakeNotifier, streams: list[Stream]
) -> None:
    first = await open_stream(world, notifier, streams).next()
    assert (first.kind, first.unread_count, seq_of(first.cursor)) == (
        InboxEventKind.UNREAD_COUNT,
        0,
        0,
    )


async def test_delivered_notifications_arrive_on_a_wake_up_with_rising_counts(
    world: World, notifier: FakeNotifier, streams: list[Stream]
) -> None:
    stream = open_stream(world, notifier, streams)
    await stream.next()
    for i in range(1, 4):
        await deliver(world, notifier, f"n-{i}")
        update = await stream.next()
        assert update.notification is not None
        assert (update.notification.id, update.unread_count, seq_of(update.cursor)) == (
            f"n-{i}",
            i,
            i,
        )
    # The stream only reads what it sends: it holds no notification while the client is slow.
    assert world.db.notification_locks == []


async def test_reads_arrive_with_their_ids_and_the_lower_count(
    world: World, notifier: FakeNotifier, streams: list[Stream]
) -> None:
    await deliver(world, notifier, "n-1")
    await deliver(world, notifier, "n-2")
    stream = open_stream(world, notifier, streams)
    await stream.next()
    await MarkAsRead(world.uow, world.clock, notifier).execute(ALICE, ["n-2", "n-1"])
    update = await stream.next()
    assert update.kind is InboxEventKind.NOTIFICATIONS_READ
    assert set(update.read_ids) == {"n-1", "n-2"}
    assert (update.unread_count, update.notification) == (0, None)


async def test_a_lost_wake_up_only_waits_for_the_poll(world: World, streams: list[Stream]) -> None:
    lossy = FakeNotifier(lossy=True)
    stream = open_stream(world, lossy, streams, poll_interval=0.01)
    await stream.next()
    await deliver(world, lossy, "n-1")
    update = await stream.next()
    assert update.notification is not None
    assert update.notification.id == "n-1"


async def test_another_users_and_tenants_changes_are_not_streamed(
    world: World, notifier: FakeNotifier, streams: list[Stream]
) -> None:
    stream = open_stream(world, notifier, streams)
    await stream.next()
    await deliver(world, notifier, "n-other-user", user="user-2")
    await deliver(world, notifier, "n-other-tenant", tenant="tenant-b")
    await deliver(world, notifier, "n-mine")
    update = await stream.next()
    assert update.notification is not None
    assert update.notification.id == "n-mine"
    assert update.unread_count == 1


# -- resuming ----------------------------------------------------------------------------------


async def test_resuming_sends_exactly_what_came_after_the_cursor(
    world: World, notifier: FakeNotifier, streams: list[Stream]
) -> None:
    first = open_stream(world, notifier, streams)
    await first.next()
    await deliver(world, notifier, "n-1")
    last_seen = await first.next()
    await first.updates.aclose()  # type: ignore[attr-defined]
    assert notifier.count() == 0  # the disconnected stream let go of its subscription

    await deliver(world, notifier, "n-2")
    await deliver(world, notifier, "n-3")
    resumed = open_stream(world, notifier, streams, last_seen.cursor)
    missed = await resumed.take(2)
    assert [u.notification.id for u in missed if u.notification] == ["n-2", "n-3"]
    assert [u.unread_count for u in missed] == [2, 3]
    # ...and then live changes, with nothing repeated in between.
    await deliver(world, notifier, "n-4")
    live = await resumed.next()
    assert live.notification is not None
    assert live.notification.id == "n-4"


async def test_a_backlog_larger_than_a_page_is_sent_without_waiting(
    world: World, notifier: FakeNotifier, streams: list[Stream]
) -> None:
    for i in range(25):
        await deliver(world, notifier, f"n-{i:02}")
    cursor = InboxCursors().encode("tenant-a", USER, 0)
    stream = open_stream(world, FakeNotifier(lossy=True), streams, cursor, page_size=10)
    updates = await stream.take(25)
    assert [seq_of(u.cursor) for u in updates] == list(range(1, 26))
    assert [u.notification.id for u in updates if u.notification] == [
        f"n-{i:02}" for i in range(25)
    ]


async def test_a_pruned_cursor_restarts_from_the_current_count(
    world: World, notifier: FakeNotifier, streams: list[Stream]
) -> None:
    for i in range(4):
        await deliver(world, notifier, f"n-{i}")
    old = InboxCursors().encode("tenant-a", USER, 1)
    async with world.uow() as uow:
        assert await uow.inbox.prune(T0 + timedelta(seconds=1), 100) == 3
        await uow.commit()
    stream = open_stream(world, notifier, streams, old)
    restart = await stream.next()
    assert (restart.kind, restart.unread_count, seq_of(restart.cursor)) == (
        InboxEventKind.UNREAD_COUNT,
        4,
        4,
    )
    await deliver(world, notifier, "n-next")
    update = await stream.next()
    assert (seq_of(update.cursor), update.unread_count) == (5, 5)


async def test_the_cursor_of_the_last_kept_event_still_resumes(
    world: World, notifier: FakeNotifier, streams: list[Stream]
) -> None:
    for i in range(3):
        await deliver(world, notifier, f"n-{i}")
    async with world.uow() as uow:
        await uow.inbox.prune(T0 + timedelta(seconds=1), 100)
        await uow.commit()
    stream = open_stream(world, notifier, streams, InboxCursors().encode("tenant-a", USER, 3))
    await deliver(world, notifier, "n-next")
    update = await stream.next()
    assert update.kind is InboxEventKind.NOTIFICATION_DELIVERED
    assert seq_of(update.cursor) == 4


# -- refusals ----------------------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64 at all!",
        _b64("v2:3:" + "0" * 12),
        _b64("v1:-3:" + "0" * 12),
        _b64("v1:3"),
        _b64("v1:99999999999999999999:" + "0" * 12),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
async def test_a_malformed_cursor_is_refused_before_subscribing(
    world: World, notifier: FakeNotifier, streams: list[Stream], cursor: str
) -> None:
    stream = open_stream(world, notifier, streams, cursor)
    with pytest.raises(ValidationFailed) as info:
        await stream.next()
    assert [v.field for v in info.value.violations] == ["cursor"]
    assert notifier.count() == 0


async def test_another_users_cursor_is_refused(
    world: World, notifier: FakeNotifier, streams: list[Stream]
) -> None:
    await deliver(world, notifier, "n-1")
    theirs = InboxCursors().encode("tenant-a", "user-2", 1)
    with pytest.raises(ValidationFailed) as info:
        await open_stream(world, notifier, streams, theirs).next()
    assert "another user" in str(info.value)
    other_tenant = InboxCursors().encode("tenant-a", USER, 1)
    with pytest.raises(ValidationFailed):
        await open_stream(world, notifier, streams, other_tenant, principal=BOB).next()


async def test_a_cursor_beyond_the_head_is_refused(
    world: World, notifier: FakeNotifier, streams: list[Stream]
) -> None:
    await deliver(world, notifier, "n-1")
    ahead = InboxCursors().encode("tenant-a", USER, 2)
    with pytest.raises(ValidationFailed) as info:
        await open_stream(world, notifier, streams, ahead).next()
    assert [v.field for v in info.value.violations] == ["cursor"]
    assert notifier.count() == 0


async def test_a_user_is_required(
    world: World, notifier: FakeNotifier, streams: list[Stream]
) -> None:
    with pytest.raises(ValidationFailed) as info:
        await open_stream(world, notifier, streams, user=" ").next()
    assert [v.field for v in info.value.violations] == ["user_id"]


# -- ending ------------------------------------------------------------------------------------


async def test_the_stop_signal_ends_a_waiting_stream(
    world: World, notifier: FakeNotifier, streams: list[Stream]
) -> None:
    stream = open_stream(world, notifier, streams)
    await stream.next()
    waiting = asyncio.ensure_future(stream.next())
    await asyncio.sleep(0)
    assert not waiting.done()
    stream.stop.set()
    with pytest.raises(StopAsyncIteration):
        await waiting
    assert notifier.count() == 0


async def test_a_cancelled_stream_lets_go_of_its_subscription(
    world: World, notifier: FakeNotifier, streams: list[Stream]
) -> None:
    stream = open_stream(world, notifier, streams)
    await stream.next()
    waiting = asyncio.ensure_future(anext(stream.updates))
    await asyncio.sleep(0)
    assert notifier.count() == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert notifier.count() == 0


# -- what MarkAsRead logs ----------------------------------------------------------------------


@pytest.fixture
def inbox(world: World) -> World:
    world.db.insert(
        delivered("n-1"), delivered("n-2"), delivered("n-3"), delivered("u2-1", user_id="user-2")
    )
    return world


def events(world: World, user: str = USER) -> list[tuple[InboxEventKind, tuple[str, ...], int]]:
    return [
        (e.kind, e.read_ids, e.unread_count) for e in world.db.inbox.get(("tenant-a", user), [])
    ]


async def test_mark_as_read_logs_one_event_per_user_with_the_ids_it_changed(
    inbox: World, notifier: FakeNotifier
) -> None:
    mark = MarkAsRead(inbox.uow, inbox.clock, notifier)
    assert await mark.execute(ALICE, ["n-1"]) == 1
    assert await mark.execute(ALICE, ["n-1", "n-2", "u2-1"]) == 2
    read = InboxEventKind.NOTIFICATIONS_READ
    assert events(inbox) == [(read, ("n-1",), 2), (read, ("n-2",), 1)]
    assert events(inbox, "user-2") == [(read, ("u2-1",), 0)]
    assert notifier.published == [
        ("tenant-a", USER),
        ("tenant-a", USER),
        ("tenant-a", "user-2"),
    ]


async def test_mark_as_read_that_changes_nothing_logs_nothing(
    inbox: World, notifier: FakeNotifier
) -> None:
    mark = MarkAsRead(inbox.uow, inbox.clock, notifier)
    await mark.execute(ALICE, ["n-1"])
    notifier.published.clear()
    assert await mark.execute(ALICE, ["n-1"]) == 0
    assert len(events(inbox)) == 1
    assert notifier.published == []


async def test_a_refused_mark_as_read_logs_and_wakes_nothing(
    inbox: World, notifier: FakeNotifier
) -> None:
    with pytest.raises(NotFound):
        await MarkAsRead(inbox.uow, inbox.clock, notifier).execute(ALICE, ["n-1", "nope"])
    assert events(inbox) == []
    assert notifier.published == []


async def test_a_failing_wake_up_does_not_fail_mark_as_read(inbox: World) -> None:
    class Broken(FakeNotifier):
        async def publish(self, tenant_id: str, user_id: str) -> None:
            raise ConnectionError("redis is away")

    assert await MarkAsRead(inbox.uow, inbox.clock, Broken()).execute(ALICE, ["n-1"]) == 1
    assert len(events(inbox)) == 1


# -- pruning -----------------------------------------------------------------------------------


async def test_pruning_drops_old_events_but_keeps_each_users_latest(
    world: World, notifier: FakeNotifier
) -> None:
    for i in range(5):
        await deliver(world, notifier, f"n-{i}")
    await deliver(world, notifier, "u2-0", user="user-2")
    world.clock.set(T0 + timedelta(days=8))
    await deliver(world, notifier, "n-new")
    prune = PruneInboxEvents(world.uow, world.clock, keep=timedelta(days=7), batch=2)
    assert await prune.execute() == 5
    assert world.db.commits == 7 + 3  # three batches: 2, 2 and the last, short one
    assert [e.seq for e in world.db.inbox[("tenant-a", USER)]] == [6]
    assert [e.seq for e in world.db.inbox[("tenant-a", "user-2")]] == [1]


async def test_pruning_runs_at_most_once_an_interval_and_resumes_where_it_stopped(
    world: World, notifier: FakeNotifier
) -> None:
    for i in range(6):
        await deliver(world, notifier, f"n-{i}")
    world.clock.set(T0 + timedelta(days=8))
    prune = PruneInboxEvents(
        world.uow, world.clock, batch=2, max_batches=1, interval=timedelta(hours=1)
    )
    assert await prune.execute() == 2
    world.clock.advance(timedelta(minutes=59))
    opened = world.uow.opened
    assert await prune.execute() == 0
    assert world.uow.opened == opened  # not due: the database is not asked
    world.clock.advance(timedelta(minutes=1))
    assert await prune.execute() == 2
    world.clock.advance(timedelta(hours=1))
    assert await prune.execute() == 1
    assert [e.seq for e in world.db.inbox[("tenant-a", USER)]] == [6]
