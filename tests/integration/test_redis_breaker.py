"""RedisCircuitBreaker against a real redis-server, on a hand-driven clock; two breaker
instances on two connections stand for two workers. Ends with the failover chain on it: to the
backup while the primary is down, and back once the breaker closes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from application.errors import Unavailable
from application.failover import FailoverSender
from application.ports.sender import BreakerState, DeliveryFailed
from domain.notification import (
    Address,
    Channel,
    Content,
    DeliveryResult,
    ErrorClass,
    NewNotification,
    Notification,
    Priority,
)
from infrastructure.resilience import RedisCircuitBreaker, RedisRateLimiter

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
THRESHOLD = 3
WINDOW = timedelta(seconds=10)
COOLDOWN = timedelta(seconds=30)
P = "smtp"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_breaker(client: aioredis.Redis) -> RedisCircuitBreaker:
    return RedisCircuitBreaker(
        client, namespace="test", failure_threshold=THRESHOLD, window=WINDOW, cooldown=COOLDOWN
    )


@pytest.fixture
async def second_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """Another worker's connection to the same Redis."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def breaker(redis_client: aioredis.Redis) -> RedisCircuitBreaker:
    return make_breaker(redis_client)


@pytest.fixture
def other_worker(second_client: aioredis.Redis) -> RedisCircuitBreaker:
    return make_breaker(second_client)


async def open_at(breaker: RedisCircuitBreaker, seconds: float) -> None:
    for _ in range(THRESHOLD):
        await breaker.record_failure(P, at(seconds))
    assert await breaker.state(P, at(seconds)) is BreakerState.OPEN


# -- opening ---------------------------------------------------------------------------------


async def test_opens_after_threshold_failures_within_the_window(
    breaker: RedisCircuitBreaker, other_worker: RedisCircuitBreaker
) -> None:
    await breaker.record_failure(P, at(0))
    await other_worker.record_failure(P, at(4))
    assert await breaker.allow(P, at(5))
    assert await breaker.state(P, at(5)) is BreakerState.CLOSED

    await other_worker.record_failure(P, at(9))

    assert await breaker.state(P, at(9)) is BreakerState.OPEN
    assert not await breaker.allow(P, at(9))
    assert not await other_worker.allow(P, at(9))


async def test_failures_spread_beyond_the_window_do_not_open(
    breaker: RedisCircuitBreaker,
) -> None:
    await breaker.record_failure(P, at(0))
    await breaker.record_failure(P, at(6))
    # The failure at 0 s has left the 10 s window by 12 s.
    await breaker.record_failure(P, at(12))
    assert await breaker.state(P, at(12)) is BreakerState.CLOSED
    assert await breaker.allow(P, at(12))

    await breaker.record_failure(P, at(13))

    assert await breaker.state(P, at(13)) is BreakerState.OPEN


async def test_successes_in_between_do_not_hide_failures(breaker: RedisCircuitBreaker) -> None:
    for second in range(THRESHOLD):
        await breaker.record_failure(P, at(second))
        await breaker.record_success(P, at(second))

    assert await breaker.state(P, at(THRESHOLD)) is BreakerState.OPEN


async def test_other_providers_are_not_affected(breaker: RedisCircuitBreaker) -> None:
    await open_at(breaker, 0)

    assert await breaker.allow("smtp-2", at(1))
    assert await breaker.state("smtp-2", at(1)) is BreakerState.CLOSED


async def test_open_blocks_until_the_cooldown_has_passed(breaker: RedisCircuitBreaker) -> None:
    await open_at(breaker, 0)

    assert not await breaker.allow(P, at(1))
    assert not await breaker.allow(P, at(29.999))
    assert await breaker.allow(P, at(30))


async def test_outcomes_reported_while_open_change_nothing(
    breaker: RedisCircuitBreaker,
) -> None:
    await open_at(breaker, 0)

    # Late answers to requests sent before it opened: the cool-down still runs from 0 s.
    await breaker.record_success(P, at(5))
    for _ in range(THRESHOLD):
        await breaker.record_failure(P, at(20))

    assert await breaker.state(P, at(20)) is BreakerState.OPEN
    assert not await breaker.allow(P, at(29))
    assert await breaker.allow(P, at(30))


# -- half-open -------------------------------------------------------------------------------


async def test_after_the_cooldown_exactly_one_caller_gets_the_probe(
    breaker: RedisCircuitBreaker, other_worker: RedisCircuitBreaker
) -> None:
    await open_at(breaker, 0)

    answers = await asyncio.gather(
        *(w.allow(P, at(31)) for _ in range(20) for w in (breaker, other_worker))
    )

    assert sum(answers) == 1
    assert await other_worker.state(P, at(31)) is BreakerState.HALF_OPEN


async def test_probe_success_closes_and_clears_the_failures(
    breaker: RedisCircuitBreaker, other_worker: RedisCircuitBreaker
) -> None:
    await open_at(breaker, 0)
    assert await breaker.allow(P, at(30))

    await breaker.record_success(P, at(31))

    assert await other_worker.state(P, at(31)) is BreakerState.CLOSED
    assert all([await other_worker.allow(P, at(31)) for _ in range(5)])
    # The failures that opened it are gone: it takes a full threshold again.
    for _ in range(THRESHOLD - 1):
        await breaker.record_failure(P, at(32))
    assert await breaker.state(P, at(32)) is BreakerState.CLOSED


async def test_probe_failure_reopens_from_then(
    breaker: RedisCircuitBreaker, other_worker: RedisCircuitBreaker
) -> None:
    await open_at(breaker, 0)
    assert await breaker.allow(P, at(30))

    await breaker.record_failure(P, at(35))

    assert await other_worker.state(P, at(35)) is BreakerState.OPEN
    assert not await other_worker.allow(P, at(64))
    assert await other_worker.allow(P, at(65))


async def test_a_lost_probe_expires_and_the_next_caller_probes(
    breaker: RedisCircuitBreaker, other_worker: RedisCircuitBreaker
) -> None:
    await open_at(breaker, 0)
    # This worker takes the probe and dies without reporting.
    assert await breaker.allow(P, at(30))

    assert not await other_worker.allow(P, at(59.999))
    assert await other_worker.allow(P, at(60))
    assert not await breaker.allow(P, at(60))
    await other_worker.record_success(P, at(61))
    assert await breaker.state(P, at(61)) is BreakerState.CLOSED


# -- housekeeping ----------------------------------------------------------------------------


async def test_keys_expire(breaker: RedisCircuitBreaker, redis_client: aioredis.Redis) -> None:
    state_key, failures_key = breaker.keys(P)
    await breaker.record_failure(P, at(0))
    assert await redis_client.pttl(failures_key) > 0
    assert await redis_client.pttl(state_key) > 0

    await open_at(breaker, 1)
    assert await redis_client.pttl(state_key) > 0
    assert await breaker.allow(P, at(40))
    assert await redis_client.pttl(state_key) > 0


async def test_unreachable_redis_is_unavailable(unreachable_redis: aioredis.Redis) -> None:
    unreachable = make_breaker(unreachable_redis)
    with pytest.raises(Unavailable):
        await unreachable.allow(P, T0)
    with pytest.raises(Unavailable):
        await unreachable.record_failure(P, T0)


# -- the failover chain on it ----------------------------------------------------------------


class HandClock:
    def __init__(self) -> None:
        self.current = T0

    def now(self) -> datetime:
        return self.current


class SwitchableProvider:
    """Down (PROVIDER_DOWN) or up at the flick of ``down``; ``hold`` keeps a request waiting."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.channel = Channel.EMAIL
        self.down = False
        self.hold: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.calls: list[str] = []

    async def send(self, notification: Notification) -> DeliveryResult:
        self.calls.append(notification.id)
        self.entered.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.down:
            raise DeliveryFailed(ErrorClass.PROVIDER_DOWN, "connection refused", provider=self.name)
        return DeliveryResult(self.name, f"{self.name}:{notification.id}")


def email(id: str) -> Notification:
    n = Notification.accept(
        NewNotification(
            request_id=f"req-{id}",
            user_id="user-1",
            channel=Channel.EMAIL,
            priority=Priority.MEDIUM,
            category="test",
            content=Content("title", "body"),
            address=Address("email", "user@example.com"),
        ),
        id=id,
        tenant_id="tenant-a",
        caller="tests",
        fingerprint=f"fp-{id}",
        now=T0,
    )
    n.begin_attempt(T0)
    return n


async def test_failover_to_the_backup_and_back_after_the_breaker_closes(
    redis_client: aioredis.Redis, second_client: aioredis.Redis
) -> None:
    clock = HandClock()
    primary, backup = SwitchableProvider("smtp"), SwitchableProvider("smtp-2")

    def worker(client: aioredis.Redis) -> FailoverSender:
        breaker = make_breaker(client)
        return FailoverSender(
            Channel.EMAIL,
            [primary, backup],
            clock=clock,
            breaker=breaker,
            limiter=RedisRateLimiter(client, {}, namespace="test"),
            breaker_cooldown=breaker.cooldown,
        )

    one, two = worker(redis_client), worker(second_client)
    observer = make_breaker(redis_client)

    # The primary goes down: each send fails over, until the breaker has seen enough.
    primary.down = True
    for i in range(THRESHOLD):
        clock.current = at(i)
        delivered = await (one, two)[i % 2].send(email(f"down-{i}"))
        assert delivered.result.provider == "smtp-2"
        assert [f.provider for f in delivered.failovers] == ["smtp"]
    opened_at = at(THRESHOLD - 1)
    assert await observer.state(P, opened_at) is BreakerState.OPEN

    # Open: straight to the backup, the primary not even called, by every worker.
    primary.calls.clear()
    for i, sender in enumerate((one, two, one)):
        clock.current = opened_at + timedelta(seconds=1 + i)
        delivered = await sender.send(email(f"open-{i}"))
        assert delivered.result.provider == "smtp-2"
        assert delivered.failovers == ()
    assert primary.calls == []

    # The primary recovers; the breaker does not know yet until the cool-down has passed.
    primary.down = False
    clock.current = opened_at + COOLDOWN - timedelta(milliseconds=1)
    assert (await one.send(email("still-open"))).result.provider == "smtp-2"
    assert primary.calls == []

    # After the cool-down one send probes the primary; while it is out, others use the backup.
    clock.current = opened_at + COOLDOWN
    primary.hold = asyncio.Event()
    probe = asyncio.create_task(one.send(email("probe")))
    await asyncio.wait_for(primary.entered.wait(), timeout=5)
    assert await observer.state(P, clock.current) is BreakerState.HALF_OPEN
    # (Bounded: were it let through too, it would wait on the held primary for ever.)
    during = await asyncio.wait_for(two.send(email("during-probe")), timeout=5)
    assert during.result.provider == "smtp-2"
    assert primary.calls == ["probe"]
    primary.hold.set()
    assert (await probe).result.provider == "smtp"
    assert await observer.state(P, clock.current) is BreakerState.CLOSED

    # Closed: the primary is used again by every worker.
    primary.hold = None
    backup.calls.clear()
    for i, sender in enumerate((one, two)):
        delivered = await sender.send(email(f"closed-{i}"))
        assert delivered.result.provider == "smtp"
        assert delivered.failovers == ()
    assert backup.calls == []
