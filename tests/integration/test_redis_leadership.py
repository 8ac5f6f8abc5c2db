"""RedisLeadership against a real redis-server, and two workers' reconcilers sharing the role
over the real Postgres and Redis."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
import redis.asyncio as aioredis

from application.errors import Unavailable
from application.ports.leadership import Hold
from application.use_cases.reconcile_queue import ROLE, ReconcileQueue
from infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from infrastructure.scheduling import RedisLeadership, RedisScheduler, process_holder
from tests.integration.test_notification_repository import add, at, make

pytestmark = pytest.mark.integration

TERM = timedelta(seconds=30)


def leadership(client: aioredis.Redis, holder: str) -> RedisLeadership:
    return RedisLeadership(client, holder=holder, namespace="lead-test")


async def test_one_holder_at_a_time_until_the_term_runs_out(
    redis_client: aioredis.Redis,
) -> None:
    one, two = leadership(redis_client, "one"), leadership(redis_client, "two")
    term = timedelta(seconds=1)
    assert await one.hold("r", term) is Hold.TAKEN
    assert await two.hold("r", term) is Hold.REFUSED
    assert await redis_client.get(one.key("r")) == b"one"
    await asyncio.sleep(1.1)
    assert await two.hold("r", term) is Hold.TAKEN
    assert await one.hold("r", term) is Hold.REFUSED


async def test_holding_again_extends_the_term(redis_client: aioredis.Redis) -> None:
    one, two = leadership(redis_client, "one"), leadership(redis_client, "two")
    term = timedelta(seconds=1)
    assert await one.hold("r", term) is Hold.TAKEN
    for _ in range(4):
        await asyncio.sleep(0.4)
        assert await one.hold("r", term) is Hold.KEPT
        assert await two.hold("r", term) is Hold.REFUSED
    # 1.6 s since it first took a 1 s term: still held, as each hold restarted it.
    assert 0 < await redis_client.pttl(one.key("r")) <= 1000


async def test_resign_frees_the_role_only_for_its_holder(redis_client: aioredis.Redis) -> None:
    one, two = leadership(redis_client, "one"), leadership(redis_client, "two")
    assert await one.hold("r", TERM) is Hold.TAKEN
    await two.resign("r")
    assert await two.hold("r", TERM) is Hold.REFUSED
    await one.resign("r")
    assert await two.hold("r", TERM) is Hold.TAKEN


async def test_roles_are_separate_and_live_under_the_namespace(
    redis_client: aioredis.Redis,
) -> None:
    one, two = leadership(redis_client, "one"), leadership(redis_client, "two")
    assert await one.hold("a", TERM) is Hold.TAKEN
    assert await two.hold("b", TERM) is Hold.TAKEN
    assert sorted(await redis_client.keys("*")) == [b"{lead-test}:role:a", b"{lead-test}:role:b"]


def test_each_process_holds_under_a_name_of_its_own() -> None:
    assert process_holder() != process_holder()
    with pytest.raises(ValueError, match="holder"):
        RedisLeadership(aioredis.Redis(), holder="")
    with pytest.raises(ValueError, match="namespace"):
        RedisLeadership(aioredis.Redis(), holder="one", namespace="{x}")


async def test_unreachable_redis_is_unavailable(unreachable_redis: aioredis.Redis) -> None:
    unreachable = leadership(unreachable_redis, "one")
    with pytest.raises(Unavailable):
        await unreachable.hold("r", TERM)
    with pytest.raises(Unavailable):
        await unreachable.resign("r")


# -- two workers' reconcilers on one Redis -----------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.at = now

    def now(self) -> datetime:
        return self.at


async def test_only_one_of_two_workers_reconciles_and_the_other_takes_over(
    uow: SqlUnitOfWorkFactory, scheduler: RedisScheduler, redis_client: aioredis.Redis
) -> None:
    await add(uow, *(make(f"n{i}", now=at(-60)) for i in range(3)))
    clock = Clock(at(0))

    def worker(holder: str) -> ReconcileQueue:
        return ReconcileQueue(uow, scheduler, clock, leadership(redis_client, holder), term=TERM)

    one, two = worker("one"), worker("two")
    assert await one.execute() == 3
    assert await two.execute() == 0
    # Lost from Redis: only the holder puts them back.
    await redis_client.delete(*scheduler.keys)
    assert await two.execute() == 0
    assert await scheduler.contains_many(["n0", "n1", "n2"]) == [False] * 3
    await one.resign()
    assert await two.execute() == 3
    assert await scheduler.contains_many(["n0", "n1", "n2"]) == [True] * 3
    assert await redis_client.get(f"{{lead-test}}:role:{ROLE}") == b"two"
