"""ReconcileQueue: re-enqueue what Postgres says is unsettled and the queue lost."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import timedelta

import pytest

from application.errors import Unavailable
from application.ports.scheduler import QueueItem
from application.use_cases import reconcile_queue
from application.use_cases.reconcile_queue import ReconcileQueue
from domain.notification import Notification, Priority
from tests.unit.application.fakes import (
    T0,
    FakeLeadership,
    World,
    delivered,
    make_notification,
)

GRACE = timedelta(seconds=5)
TERM = timedelta(seconds=30)
SIT_OUT = timedelta(seconds=10)


def reconcile(
    world: World, batches_per_call: int = 5, leadership: FakeLeadership | None = None
) -> ReconcileQueue:
    return ReconcileQueue(
        world.uow,
        world.scheduler,
        world.clock,
        leadership or FakeLeadership(world.clock),
        grace=GRACE,
        batches_per_call=batches_per_call,
        term=TERM,
        sit_out=SIT_OUT,
    )


def scheduled(id: str, hours: int) -> Notification:
    n = make_notification(id)
    n.due_at = T0 + timedelta(hours=hours)
    return n


@pytest.fixture
def rows(world: World) -> World:
    present = make_notification("present")
    sending = make_notification("stranded")
    sending.begin_attempt(T0)
    world.db.insert(
        make_notification("lost"),
        present,
        sending,
        scheduled("lost-later", 48),
        delivered("done"),
        make_notification("young", now=T0 + timedelta(minutes=1) - timedelta(seconds=2)),
    )
    world.scheduler.waiting["present"] = QueueItem("present", Priority.MEDIUM, T0)
    world.clock.set(T0 + timedelta(minutes=1))
    return world


async def test_the_first_run_rebuilds_everything_unsettled_and_missing(rows: World) -> None:
    assert await reconcile(rows).execute() == 4
    enqueued = {i.notification_id: i for i in rows.scheduler.enqueued}
    assert set(enqueued) == {"lost", "stranded", "lost-later", "young"}
    assert enqueued["lost"] == QueueItem("lost", Priority.MEDIUM, T0)
    assert enqueued["lost-later"].due_at == T0 + timedelta(hours=48)


async def test_later_runs_skip_rows_younger_than_the_grace_period(rows: World) -> None:
    r = reconcile(rows)
    await r.execute()
    # Lost again between runs: only the old enough come back at once.
    rows.scheduler.waiting.pop("lost")
    rows.scheduler.waiting.pop("young")
    rows.scheduler.enqueued.clear()
    assert await r.execute() == 1
    assert [i.notification_id for i in rows.scheduler.enqueued] == ["lost"]
    rows.clock.advance(GRACE)
    assert await r.execute() == 1
    assert rows.scheduler.enqueued[-1].notification_id == "young"


async def test_a_second_run_finds_nothing_missing(rows: World) -> None:
    r = reconcile(rows)
    await r.execute()
    rows.scheduler.enqueued.clear()
    assert await r.execute() == 0
    assert rows.scheduler.enqueued == []


async def test_a_replaced_queue_is_rebuilt_in_one_run(rows: World) -> None:
    r = reconcile(rows, batches_per_call=1)
    await r.execute()
    rows.scheduler.lose_everything()
    rows.scheduler.enqueued.clear()
    assert await r.execute() == 5
    assert {i.notification_id for i in rows.scheduler.enqueued} == {
        "lost",
        "present",
        "stranded",
        "lost-later",
        "young",
    }


async def test_a_large_backlog_is_covered_in_slices(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile_queue, "BATCH", 2)
    world.db.insert(*[make_notification(f"n{i}") for i in range(7)])
    world.clock.set(T0 + timedelta(minutes=1))
    r = reconcile(world, batches_per_call=1)
    await r.execute()  # the first run scans everything
    world.scheduler.waiting.clear()
    world.scheduler.enqueued.clear()
    seen: list[str] = []
    for _ in range(4):
        await r.execute()
        seen.extend(i.notification_id for i in world.scheduler.enqueued)
        world.scheduler.enqueued.clear()
    assert sorted(seen) == [f"n{i}" for i in range(7)]


async def test_nothing_to_do_makes_no_enqueue_call(world: World) -> None:
    assert await reconcile(world).execute() == 0
    assert "enqueue" not in world.scheduler.calls


async def test_a_row_settled_during_the_scan_is_not_re_enqueued(world: World) -> None:
    world.db.insert(make_notification("racing"))
    world.clock.set(T0 + timedelta(minutes=1))
    r = reconcile(world)
    await r.execute()
    world.scheduler.waiting.clear()
    world.scheduler.enqueued.clear()
    real_contains = world.scheduler.contains_many

    async def worker_finishes_meanwhile(ids: Sequence[str]) -> list[bool]:
        # Between the Postgres read and the Redis check, a worker delivers and acks it.
        world.db.insert(delivered("racing"))
        return await real_contains(ids)

    world.scheduler.contains_many = worker_finishes_meanwhile  # type: ignore[method-assign]
    world.clock.advance(GRACE)
    assert await r.execute() == 0
    assert world.scheduler.enqueued == []


# -- one worker reconciles at a time ---------------------------------------------------------


def two_workers(world: World) -> tuple[ReconcileQueue, ReconcileQueue]:
    first = FakeLeadership(world.clock, "worker-1")
    return reconcile(world, leadership=first), reconcile(
        world, leadership=first.as_holder("worker-2")
    )


@contextlib.contextmanager
def queue_unreachable(world: World, reason: str) -> Iterator[None]:
    """Every contains_many fails as a lost Redis connection does, while the block runs."""
    real_contains = world.scheduler.contains_many

    async def unreachable(ids: Sequence[str]) -> list[bool]:
        raise Unavailable(reason)

    world.scheduler.contains_many = unreachable  # type: ignore[method-assign]
    try:
        yield
    finally:
        world.scheduler.contains_many = real_contains  # type: ignore[method-assign]


def forget_enqueues(world: World) -> None:
    world.scheduler.waiting.clear()
    world.scheduler.enqueued.clear()
    world.scheduler.calls.clear()


async def test_only_the_holder_of_the_role_scans(rows: World) -> None:
    one, two = two_workers(rows)
    assert await one.execute() == 4
    forget_enqueues(rows)
    assert await two.execute() == 0
    # It neither asked the queue nor put anything back: the rows are not even read.
    assert rows.scheduler.calls == []
    rows.clock.advance(GRACE)
    assert await one.execute() == 5


async def test_the_role_passes_when_its_holder_stops_renewing_it(rows: World) -> None:
    one, two = two_workers(rows)
    await one.execute()
    forget_enqueues(rows)
    rows.clock.advance(TERM - timedelta(seconds=1))
    assert await two.execute() == 0
    rows.clock.advance(timedelta(seconds=1))
    assert await two.execute() == 5
    assert await one.execute() == 0


async def test_a_resigned_role_is_taken_at_once_with_a_full_scan(rows: World) -> None:
    one, two = two_workers(rows)
    await one.execute()
    forget_enqueues(rows)
    assert await two.execute() == 0
    await one.resign()
    # The new holder never watched the queue: a full scan with no grace period, as at
    # start-up, so the young row comes back too.
    assert await two.execute() == 5


@pytest.mark.parametrize("refused_meanwhile", [True, False], ids=["refused", "lapsed-unseen"])
async def test_a_holder_that_regains_the_role_starts_over_with_a_full_scan(
    rows: World, refused_meanwhile: bool
) -> None:
    one, two = two_workers(rows)
    await one.execute()
    # Its term ran out (a stalled process); worker-2 took the role. Worker-1 either asks while
    # worker-2 holds it (and is refused), or sleeps through worker-2's whole tenure.
    rows.clock.advance(TERM)
    await two.execute()
    if refused_meanwhile:
        assert await one.execute() == 0
    await two.resign()
    # Flushed (the run_id stays) while worker-2 held the role: worker-1 did not watch.
    forget_enqueues(rows)
    rows.db.insert(make_notification("newer", now=rows.clock.now() - timedelta(seconds=1)))
    assert await one.execute() == 6


async def test_a_holder_that_loses_the_role_stops_within_one_slice(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile_queue, "BATCH", 2)
    world.db.insert(*[make_notification(f"n{i}") for i in range(7)])
    world.clock.set(T0 + timedelta(minutes=1))
    leadership = FakeLeadership(world.clock, "worker-1")
    one = reconcile(world, leadership=leadership)
    real_contains = world.scheduler.contains_many

    async def role_taken_meanwhile(ids: Sequence[str]) -> list[bool]:
        # Its term ran out during a long scan (a stalled process) and another worker took it.
        leadership.roles[reconcile_queue.ROLE] = ("worker-2", world.clock.now() + TERM)
        return await real_contains(ids)

    world.scheduler.contains_many = role_taken_meanwhile  # type: ignore[method-assign]
    assert await one.execute() == 2
    assert [i.notification_id for i in world.scheduler.enqueued] == ["n0", "n1"]


async def test_the_holder_extends_its_term_on_every_slice(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile_queue, "BATCH", 2)
    world.db.insert(*[make_notification(f"n{i}") for i in range(7)])
    leadership = FakeLeadership(world.clock, "worker-1")
    one = reconcile(world, leadership=leadership)
    two = reconcile(world, leadership=leadership.as_holder("worker-2"))
    real_contains = world.scheduler.contains_many

    async def slow_slices(ids: Sequence[str]) -> list[bool]:
        world.clock.advance(TERM / 2)
        return await real_contains(ids)

    world.scheduler.contains_many = slow_slices  # type: ignore[method-assign]
    # Four slices of half a term each: the scan outlasts two terms and still finishes.
    assert await one.execute() == 7
    assert leadership.roles[reconcile_queue.ROLE][0] == "worker-1"
    assert await two.execute() == 0


async def test_a_holder_that_cannot_reconcile_hands_the_role_over_and_sits_out_a_while(
    rows: World,
) -> None:
    one, two = two_workers(rows)
    await one.execute()
    forget_enqueues(rows)
    with queue_unreachable(rows, "redis: timed out"), pytest.raises(Unavailable):
        await one.execute()
    # The role is free at once, and worker-1 does not take it back while it sits out.
    assert await one.execute() == 0
    assert await two.execute() == 5
    await two.resign()
    rows.clock.advance(SIT_OUT - timedelta(seconds=1))
    assert await one.execute() == 0
    rows.clock.advance(timedelta(seconds=1))
    forget_enqueues(rows)
    assert await one.execute() == 5


async def test_a_failure_every_worker_shared_delays_reconciling_by_the_sit_out_only(
    rows: World,
) -> None:
    """Redis restarted: each worker's first command on a stale pooled connection fails."""
    one, two = two_workers(rows)
    with queue_unreachable(rows, "redis: connection closed by server"):
        for worker in (one, two):
            with pytest.raises(Unavailable):
                await worker.execute()
    assert await one.execute() == 0
    assert await two.execute() == 0
    rows.clock.advance(SIT_OUT)
    assert await two.execute() == 4
