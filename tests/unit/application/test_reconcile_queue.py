"""ReconcileQueue: re-enqueue what Postgres says is unsettled and the queue lost."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest

from application.ports.scheduler import QueueItem
from application.use_cases import reconcile_queue
from application.use_cases.reconcile_queue import ReconcileQueue
from domain.notification import Notification, Priority
from tests.unit.application.fakes import T0, World, delivered, make_notification

GRACE = timedelta(seconds=5)


def reconcile(world: World, batches_per_call: int = 5) -> ReconcileQueue:
    return ReconcileQueue(
        world.uow, world.scheduler, world.clock, grace=GRACE, batches_per_call=batches_per_call
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
