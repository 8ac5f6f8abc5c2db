"""RedisScheduler.stats() against a real redis-server: counts per priority and state, and the
age of the longest-due item, from known items at known times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from application.ports.scheduler import PriorityStats, QueueItem, QueueStats
from domain.notification import Priority
from infrastructure.scheduling import RedisScheduler, redis_scheduler

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def scheduler(redis_client: aioredis.Redis) -> RedisScheduler:
    return RedisScheduler(redis_client, namespace="stats-test")


async def test_an_empty_queue_reports_every_priority_at_zero(scheduler: RedisScheduler) -> None:
    assert await scheduler.stats(T0) == QueueStats({p: PriorityStats() for p in Priority})


async def test_counts_and_oldest_due_age_per_priority(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue([QueueItem("m1", Priority.MEDIUM, T0)], T0)
    [leased] = await scheduler.claim(1, T0, LEASE)
    assert leased.notification_id == "m1"
    await scheduler.enqueue(
        [
            QueueItem("h1", Priority.HIGH, at(-10)),  # ready, due 10 s before T0
            QueueItem("h2", Priority.HIGH, at(-2)),
            QueueItem("c1", Priority.CRITICAL, at(5)),  # delayed until T0 + 5 s
            QueueItem("l1", Priority.LOW, at(60)),  # delayed until T0 + 60 s
        ],
        T0,
    )

    stats = await scheduler.stats(at(20))

    assert stats.by_priority == {
        Priority.HIGH: PriorityStats(ready=2, oldest_due_age=timedelta(seconds=30)),
        # Due at T0 + 5 s and not yet promoted (no claim since): still due for 15 s.
        Priority.CRITICAL: PriorityStats(delayed=1, oldest_due_age=timedelta(seconds=15)),
        Priority.MEDIUM: PriorityStats(leased=1),
        # Not due until T0 + 60 s: waiting, but not late.
        Priority.LOW: PriorityStats(delayed=1),
    }
    assert (stats.unattributed_delayed, stats.unattributed_leased) == (0, 0)


async def test_ages_are_to_the_millisecond(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue([QueueItem("a", Priority.LOW, at(-1.25))], T0)
    stats = await scheduler.stats(at(0.5))
    assert stats.by_priority[Priority.LOW].oldest_due_age == timedelta(seconds=1.75)


async def test_stats_only_read(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue(
        [QueueItem("due", Priority.HIGH, at(5)), QueueItem("ready", Priority.LOW, T0)], T0
    )
    before = await scheduler.depth()

    await scheduler.stats(at(10))

    assert await scheduler.depth() == before, "a due delayed item is not promoted by stats()"
    assert before["delayed"] == 1


async def test_an_item_without_a_stored_priority_counts_as_low_as_claim_serves_it(
    scheduler: RedisScheduler, redis_client: aioredis.Redis
) -> None:
    await scheduler.enqueue([QueueItem("x", Priority.HIGH, at(30))], T0)
    await redis_client.hdel("{stats-test}:prio", "x")

    stats = await scheduler.stats(T0)

    assert stats.by_priority[Priority.LOW].delayed == 1
    assert stats.by_priority[Priority.HIGH].delayed == 0


async def test_beyond_the_scan_limit_items_are_counted_but_not_attributed(
    scheduler: RedisScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_scheduler, "STATS_SCAN_LIMIT", 3)
    await scheduler.enqueue(
        [QueueItem(f"d{i}", Priority.HIGH, at(i - 2)) for i in range(5)]  # d0, d1 due before T0
        + [QueueItem("r", Priority.MEDIUM, at(-1))],
        at(-10),  # everything enqueued before any of it was due: all delayed
    )

    stats = await scheduler.stats(T0)

    # The earliest-due three were attributed, overdue ones first; the other two only counted.
    assert stats.by_priority[Priority.HIGH] == PriorityStats(
        delayed=2, oldest_due_age=timedelta(seconds=2)
    )
    assert stats.by_priority[Priority.MEDIUM] == PriorityStats(
        delayed=1, oldest_due_age=timedelta(seconds=1)
    )
    assert stats.unattributed_delayed == 3
    total = sum(s.delayed for s in stats.by_priority.values()) + stats.unattributed_delayed
    assert total == 6
