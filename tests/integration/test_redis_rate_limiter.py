"""RedisRateLimiter against a real redis-server, on a hand-driven clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from application.errors import Unavailable
from infrastructure.resilience import RedisRateLimiter

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
ZERO = timedelta(0)


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


@pytest.fixture
async def second_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """Another worker's connection to the same Redis."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def limiter(redis_client: aioredis.Redis) -> RedisRateLimiter:
    return RedisRateLimiter(redis_client, {"twilio": 10}, namespace="test")


@pytest.fixture
def other_worker(second_client: aioredis.Redis) -> RedisRateLimiter:
    return RedisRateLimiter(second_client, {"twilio": 10}, namespace="test")


async def test_two_workers_together_never_exceed_the_rate(
    limiter: RedisRateLimiter, other_worker: RedisRateLimiter
) -> None:
    granted: list[int] = []
    # Both workers ask every 10 ms for 2 s, three times each: far more than the rate allows.
    for ms in range(0, 2000, 10):
        waits = await asyncio.gather(
            *(w.acquire("twilio", at(ms)) for w in (limiter, other_worker) for _ in range(3))
        )
        granted += [ms] * sum(wait == ZERO for wait in waits)

    # A burst of one second's worth (10: six asks at 0 ms, four at 10 ms), then exactly one
    # every 100 ms.
    assert granted == [0] * 6 + [10] * 4 + list(range(100, 2000, 100))
    for start in range(0, 2000, 10):
        in_a_second = [ms for ms in granted if start <= ms < start + 1000]
        assert len(in_a_second) <= 10 + 10


async def test_concurrent_callers_share_one_burst(
    limiter: RedisRateLimiter, other_worker: RedisRateLimiter
) -> None:
    waits = await asyncio.gather(
        *(w.acquire("twilio", T0) for w in (limiter, other_worker) for _ in range(25))
    )

    assert sum(wait == ZERO for wait in waits) == 10
    assert limiter.burst_slots("twilio") == 10


async def test_wait_is_the_time_until_the_next_slot(limiter: RedisRateLimiter) -> None:
    for _ in range(10):
        assert await limiter.acquire("twilio", T0) == ZERO

    assert await limiter.acquire("twilio", T0) == timedelta(milliseconds=100)
    assert await limiter.acquire("twilio", at(40)) == timedelta(milliseconds=60)
    # Refusals took nothing: the slot is free exactly when first announced.
    assert await limiter.acquire("twilio", at(100)) == ZERO
    assert await limiter.acquire("twilio", at(100)) == timedelta(milliseconds=100)


async def test_an_idle_provider_gets_its_burst_back(limiter: RedisRateLimiter) -> None:
    for _ in range(10):
        await limiter.acquire("twilio", T0)

    waits = [await limiter.acquire("twilio", at(5000)) for _ in range(11)]

    assert waits[:10] == [ZERO] * 10
    assert waits[10] == timedelta(milliseconds=100)


async def test_fractional_rate_allows_one_then_waits(redis_client: aioredis.Redis) -> None:
    slow = RedisRateLimiter(redis_client, {"vonage": 0.5}, namespace="test")

    assert await slow.acquire("vonage", T0) == ZERO
    assert await slow.acquire("vonage", T0) == timedelta(seconds=2)
    assert await slow.acquire("vonage", at(2000)) == ZERO


async def test_unlisted_provider_is_free_and_never_touches_redis(
    limiter: RedisRateLimiter, redis_client: aioredis.Redis
) -> None:
    waits = [await limiter.acquire("vonage", T0) for _ in range(100)]

    assert waits == [ZERO] * 100
    assert await redis_client.dbsize() == 0


async def test_the_key_expires_once_idle(
    limiter: RedisRateLimiter, redis_client: aioredis.Redis
) -> None:
    await limiter.acquire("twilio", T0)

    ttl_ms = await redis_client.pttl(limiter.key("twilio"))

    # 100 ms of TAT plus the margin: bounded, not forever (-1).
    assert 0 < ttl_ms <= 100 + 60_000


async def test_unreachable_redis_is_unavailable_but_unlisted_providers_still_pass(
    unreachable_redis: aioredis.Redis,
) -> None:
    unreachable = RedisRateLimiter(unreachable_redis, {"twilio": 10}, namespace="test")

    with pytest.raises(Unavailable):
        await unreachable.acquire("twilio", T0)
    assert await unreachable.acquire("vonage", T0) == ZERO


def test_rates_must_be_positive(redis_client: aioredis.Redis) -> None:
    with pytest.raises(ValueError, match="positive"):
        RedisRateLimiter(redis_client, {"twilio": 0})
