"""The worker loop: busy slots are refilled in batches, not one at a time, and housekeeping
runs beside the claims."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from application.errors import Unavailable
from application.ports.scheduler import Claim, QueueItem
from domain.notification import Priority, Status
from interfaces.worker.runner import Worker
from tests.unit.application.fakes import T0, FakeScheduler


class FixedClock:
    def now(self) -> datetime:
        return T0


class GatedDelivery:
    """Each delivery waits until the test lets it finish."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}

    async def execute(self, claim: Claim) -> Status | None:
        self.started.append(claim.notification_id)
        gate = self.gates.setdefault(claim.notification_id, asyncio.Event())
        await gate.wait()
        return Status.SENT

    def finish(self, count: int) -> None:
        waiting = [i for i in self.started if not self.gates[i].is_set()]
        for notification_id in waiting[:count]:
            self.gates[notification_id].set()


class NoReconcile:
    def __init__(self) -> None:
        self.resigned = 0

    async def execute(self) -> int:
        return 0

    async def resign(self) -> None:
        self.resigned += 1


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def eventually(condition: Callable[[], bool]) -> None:
    """Polls: the worker's timers (poll interval, backoff) are real."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition never held")


def worker_on(
    scheduler: FakeScheduler, delivery: GatedDelivery, reconcile: NoReconcile, **options: Any
) -> Worker:
    return Worker(
        scheduler,
        delivery,  # type: ignore[arg-type]
        reconcile,  # type: ignore[arg-type]
        FixedClock(),
        **{"poll_interval": 0.01, **options},
    )


@contextlib.asynccontextmanager
async def running(
    scheduler: FakeScheduler,
    delivery: GatedDelivery,
    reconcile: NoReconcile | None = None,
    **options: Any,
) -> AsyncIterator[None]:
    """A worker on ``scheduler`` and ``delivery`` while the block runs; then stopped, with
    every delivery it began let finish."""
    worker = worker_on(scheduler, delivery, reconcile or NoReconcile(), **options)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop, grace=1))
    try:
        yield
    finally:
        stop.set()
        delivery.finish(100)
        await asyncio.wait_for(task, timeout=5)


async def test_busy_slots_are_refilled_a_quarter_at_a_time() -> None:
    scheduler = FakeScheduler()
    await scheduler.enqueue([QueueItem(f"n{i:02}", Priority.MEDIUM, T0) for i in range(40)], T0)
    limits: list[int] = []
    claim = scheduler.claim

    async def recording(limit: int, now: datetime, lease: timedelta) -> list[Claim]:
        limits.append(limit)
        return await claim(limit, now, lease)

    scheduler.claim = recording  # type: ignore[method-assign]
    delivery = GatedDelivery()
    async with running(scheduler, delivery, concurrency=8, poll_interval=0.01):
        await settle()
        assert limits == [8]
        assert len(delivery.started) == 8

        # One slot free: not worth a claim of its own yet.
        delivery.finish(1)
        await settle()
        assert limits == [8]
        # A quarter free: claimed together.
        delivery.finish(1)
        await settle()
        assert limits == [8, 2]
        assert len(delivery.started) == 10


async def test_a_stopping_worker_hands_the_reconciler_role_over() -> None:
    scheduler = FakeScheduler()
    await scheduler.enqueue([QueueItem("n1", Priority.MEDIUM, T0)], T0)
    delivery = GatedDelivery()
    reconcile = NoReconcile()
    async with running(scheduler, delivery, reconcile, poll_interval=0.01):
        await settle()
        assert delivery.started == ["n1"]
        assert reconcile.resigned == 0
    assert reconcile.resigned == 1


class BlockedReconcile(NoReconcile):
    """Each call fails with the next of ``failures``, if any are left; otherwise it waits until
    the test releases it, and then fails with ``fail_next`` if set."""

    def __init__(self, *failures: BaseException) -> None:
        super().__init__()
        self.calls = 0
        self.release = asyncio.Event()
        self.fail_next: BaseException | None = None
        self._failures = list(failures)

    async def execute(self) -> int:
        self.calls += 1
        if self._failures:
            raise self._failures.pop(0)
        await self.release.wait()
        if self.fail_next is not None:
            raise self.fail_next
        return 0


async def test_claims_go_on_while_housekeeping_takes_its_time() -> None:
    scheduler = FakeScheduler()
    await scheduler.enqueue([QueueItem("n1", Priority.MEDIUM, T0)], T0)
    delivery = GatedDelivery()
    reconcile = BlockedReconcile()
    async with running(scheduler, delivery, reconcile, poll_interval=0.01):
        await settle()
        assert reconcile.calls == 1
        assert delivery.started == ["n1"]
        await scheduler.enqueue([QueueItem("n2", Priority.MEDIUM, T0)], T0)
        await eventually(lambda: len(delivery.started) == 2)
        assert reconcile.calls == 1
        reconcile.release.set()


async def test_stopping_waits_for_the_round_in_progress_then_hands_the_role_over() -> None:
    reconcile = BlockedReconcile()
    stop = asyncio.Event()
    task = asyncio.create_task(
        worker_on(FakeScheduler(), GatedDelivery(), reconcile).run(stop, grace=5)
    )
    await eventually(lambda: reconcile.calls == 1)
    stop.set()
    await asyncio.sleep(0.05)
    assert not task.done()
    assert reconcile.resigned == 0
    reconcile.release.set()
    await asyncio.wait_for(task, timeout=5)
    assert reconcile.resigned == 1


async def test_a_round_that_outlasts_the_grace_is_cut_off_and_the_role_handed_over() -> None:
    reconcile = BlockedReconcile()
    stop = asyncio.Event()
    task = asyncio.create_task(
        worker_on(FakeScheduler(), GatedDelivery(), reconcile).run(stop, grace=0.05)
    )
    await eventually(lambda: reconcile.calls == 1)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert reconcile.resigned == 1


async def test_unavailable_housekeeping_is_retried_with_backoff_while_claims_go_on() -> None:
    scheduler = FakeScheduler()
    await scheduler.enqueue([QueueItem("n1", Priority.MEDIUM, T0)], T0)
    delivery = GatedDelivery()
    reconcile = BlockedReconcile(Unavailable("redis down"), Unavailable("redis down"))
    async with running(
        scheduler, delivery, reconcile, poll_interval=0.01, housekeeping_interval=60
    ):
        # Two failures, then the third try (0.01 s, then 0.02 s later) waits on the release.
        await eventually(lambda: reconcile.calls == 3)
        assert delivery.started == ["n1"]
        reconcile.release.set()
        await asyncio.sleep(0.05)
        # The round passed: the next waits for the housekeeping interval, not the backoff.
        assert reconcile.calls == 3


async def test_an_unexpected_housekeeping_failure_ends_the_worker_after_its_deliveries() -> None:
    scheduler = FakeScheduler()
    await scheduler.enqueue([QueueItem("n1", Priority.MEDIUM, T0)], T0)
    delivery = GatedDelivery()
    broken = BlockedReconcile(RuntimeError("bug"))
    task = asyncio.create_task(worker_on(scheduler, delivery, broken).run(asyncio.Event(), grace=5))
    await settle()
    # The delivery it began is waited for, not cut off.
    assert delivery.started == ["n1"]
    assert not task.done()
    delivery.finish(1)
    with pytest.raises(RuntimeError, match="bug"):
        await asyncio.wait_for(task, timeout=5)
    assert broken.resigned == 1


async def test_a_housekeeping_failure_ends_claiming_even_with_every_slot_busy() -> None:
    scheduler = FakeScheduler()
    await scheduler.enqueue([QueueItem("n1", Priority.MEDIUM, T0)], T0)
    delivery = GatedDelivery()
    broken = BlockedReconcile()
    worker = worker_on(scheduler, delivery, broken, concurrency=1)
    task = asyncio.create_task(worker.run(asyncio.Event(), grace=0.05))
    await eventually(lambda: delivery.started == ["n1"] and broken.calls == 1)
    # The only slot is busy and stays so: the worker waits for room, or for this.
    broken.fail_next = RuntimeError("bug")
    broken.release.set()
    with pytest.raises(RuntimeError, match="bug"):
        await asyncio.wait_for(task, timeout=5)


class UnreachableOnResign(NoReconcile):
    async def resign(self) -> None:
        self.resigned += 1
        raise Unavailable("redis: connection refused")


async def test_a_role_redis_cannot_take_back_is_left_to_lapse() -> None:
    reconcile = UnreachableOnResign()
    async with running(FakeScheduler(), GatedDelivery(), reconcile, poll_interval=0.01):
        await settle()
    assert reconcile.resigned == 1
