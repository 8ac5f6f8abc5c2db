"""ReconcileQueue: put back into the scheduler what Postgres says is due and the queue lost."""

from __future__ import annotations

from datetime import timedelta

import pytest

from application.ports.scheduler import QueueItem
from application.use_cases.reconcile_queue import ReconcileQueue
from domain.notification import Notification, Priority
from tests.unit.application.fakes import T0, World, delivered, make_notification

GRACE = timedelta(seconds=5)


def reconcile(world: World) -> ReconcileQueue:
    return ReconcileQueue(world.uow, world.scheduler, world.clock, grace=GRACE)


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


async def test_re_enqueues_only_what_is_missing_and_old_enough(rows: World) -> None:
    assert await reconcile(rows).execute() == 3
    enqueued = {i.notification_id: i for i in rows.scheduler.enqueued}
    assert set(enqueued) == {"lost", "stranded", "lost-later"}
    assert enqueued["lost"] == QueueItem("lost", Priority.MEDIUM, T0)
    assert enqueued["lost-later"].due_at == T0 + timedelta(hours=48)


async def test_a_second_run_finds_nothing_missing(rows: World) -> None:
    await reconcile(rows).execute()
    rows.scheduler.enqueued.clear()
    assert await reconcile(rows).execute() == 0
    assert rows.scheduler.enqueued == []


async def test_young_rows_are_picked_up_once_the_grace_period_passes(rows: World) -> None:
    await reconcile(rows).execute()
    rows.clock.advance(GRACE)
    assert await reconcile(rows).execute() == 1
    assert rows.scheduler.enqueued[-1].notification_id == "young"


async def test_limit_takes_the_earliest_due_first(world: World) -> None:
    world.db.insert(scheduled("c", 3), scheduled("a", 1), scheduled("b", 2))
    world.clock.set(T0 + timedelta(minutes=1))
    assert await reconcile(world).execute(limit=2) == 2
    assert [i.notification_id for i in world.scheduler.enqueued] == ["a", "b"]


async def test_nothing_to_do_makes_no_enqueue_call(world: World) -> None:
    assert await reconcile(world).execute() == 0
    assert "enqueue" not in world.scheduler.calls
