"""RedisScheduler.stats() against a real redis-server: counts per priority and state, and the
age of the longest-due item, from known items at known times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from application.ports.scheduler import PriorityStats, QueueItem, QueueStats
from domain.notification import Priority
from infrastructure.redis_calls import since_epoch
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
        # Scheduled for T0 + 5 s: ready from then on, and due for 15 s by T0 + 20 s.
        Priority.CRITICAL: PriorityStats(ready=1, oldest_due_age=timedelta(seconds=15)),
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
    before = await scheduler.depth(at(10))

    await scheduler.stats(at(10))

    assert await scheduler.depth(at(10)) == before
    assert await scheduler.claim(5, at(10), LEASE) != [], "stats() took nothing"


async def test_the_earlier_layouts_delayed_set_is_counted_by_stored_priority(
    scheduler: RedisScheduler, redis_client: aioredis.Redis
) -> None:
    """Items an upgrade finds in the delayed set of the earlier layout count until a claim moves
    them: by their stored priority, LOW when it is lost (as the claim will serve them)."""
    delayed, prio = scheduler.keys[4], scheduler.keys[6]
    await redis_client.zadd(
        delayed, {"h": since_epoch(at(-3)), "x": since_epoch(at(30)), "m": since_epoch(at(40))}
    )
    await redis_client.hset(prio, mapping={"h": Priority.HIGH.value, "m": Priority.MEDIUM.value})

    stats = await scheduler.stats(T0)

    assert stats.by_priority == {
        Priority.HIGH: PriorityStats(delayed=1, oldest_due_age=timedelta(seconds=3)),
        Priority.LOW: PriorityStats(delayed=1),
        Priority.MEDIUM: PriorityStats(delayed=1),
        Priority.CRITICAL: PriorityStats(),
    }


async def test_beyond_the_scan_limit_items_are_counted_but_not_attributed(
    scheduler: RedisScheduler, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_scheduler, "STATS_SCAN_LIMIT", 3)
    # Scheduled items are counted in their priority's own set, however many.
    await scheduler.enqueue([QueueItem(f"s{i}", Priority.LOW, at(60 + i)) for i in range(5)], T0)
    await scheduler.enqueue([QueueItem(f"h{i}", Priority.HIGH, T0) for i in range(4)], T0)
    await scheduler.enqueue([QueueItem("m", Priority.MEDIUM, at(-1))], T0)
    assert len(await scheduler.claim(5, T0, LEASE)) == 5
    # Leased and the earlier layout's delayed items carry their priority in the prio hash only.
    await redis_client.zadd(
        scheduler.keys[4], {f"old{i}": since_epoch(at(i - 2)) for i in range(4)}
    )

    stats = await scheduler.stats(T0)

    # The earlier delayed set is read earliest due first: the overdue ones are among those seen.
    assert stats.by_priority[Priority.LOW] == PriorityStats(
        delayed=5 + 3, oldest_due_age=timedelta(seconds=2)
    )
    assert stats.by_priority[Priority.HIGH].leased + stats.by_priority[Priority.MEDIUM].leased == 3
    assert (stats.unattributed_delayed, stats.unattributed_leased) == (1, 2)
