"""RedisScheduler against a real redis-server, on a hand-driven clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from application.ports.scheduler import Claim, QueueItem
from domain.notification import Priority
from infrastructure.redis_calls import since_epoch
from infrastructure.scheduling import RedisScheduler
from infrastructure.scheduling.redis_scheduler import LEGACY_PER_CLAIM

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def item(nid: str, priority: Priority = Priority.MEDIUM, due: datetime = T0) -> QueueItem:
    return QueueItem(notification_id=nid, priority=priority, due_at=due)


def ids(claims: list[Claim]) -> list[str]:
    return [c.notification_id for c in claims]


def depth_of(**counts: int) -> dict[str, int]:
    """The full depth() answer: every set named, zero unless given."""
    names = ("LOW", "MEDIUM", "HIGH", "CRITICAL", "delayed", "leased")
    return {name: counts.pop(name, 0) for name in names} | counts


@pytest.fixture
def scheduler(redis_client: aioredis.Redis) -> RedisScheduler:
    return RedisScheduler(redis_client, starvation_after=timedelta(seconds=30))


async def test_claims_highest_priority_first(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue(
        [
            item("low", Priority.LOW),
            item("medium", Priority.MEDIUM),
            item("critical", Priority.CRITICAL),
            item("high", Priority.HIGH),
        ],
        T0,
    )

    claims = await scheduler.claim(10, T0, LEASE)

    assert ids(claims) == ["critical", "high", "medium", "low"]
    assert [c.priority for c in claims] == [
        Priority.CRITICAL,
        Priority.HIGH,
        Priority.MEDIUM,
        Priority.LOW,
    ]
    assert all(c.lease_deadline == T0 + LEASE for c in claims)
    tokens = [c.token for c in claims]
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == 4


async def test_fifo_by_due_time_within_a_priority(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue([item("third", due=at(-1)), item("first", due=at(-3))], T0)
    await scheduler.enqueue([item("second", due=at(-2))], T0)

    claims = await scheduler.claim(10, T0, LEASE)

    assert ids(claims) == ["first", "second", "third"]


async def test_scheduled_item_is_not_claimed_before_due(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue([item("later", Priority.HIGH, due=at(60))], T0)

    assert await scheduler.claim(10, T0, LEASE) == []
    assert await scheduler.claim(10, at(59.999), LEASE) == []
    assert (await scheduler.depth(at(59.999)))["delayed"] == 1

    claims = await scheduler.claim(10, at(60), LEASE)
    assert ids(claims) == ["later"]
    assert claims[0].priority is Priority.HIGH
    assert claims[0].lease_deadline == at(60) + LEASE


async def test_a_scheduled_item_keeps_its_due_time_for_fifo(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue([item("scheduled", due=at(10))], T0)
    await scheduler.enqueue([item("immediate", due=at(20))], at(20))

    # The scheduled one became due first, even though it was enqueued for later.
    assert ids(await scheduler.claim(10, at(20), LEASE)) == ["scheduled", "immediate"]


async def test_an_urgent_item_falling_due_is_next_despite_a_backlog_due_before_it(
    scheduler: RedisScheduler,
) -> None:
    backlog = 2005
    for start in range(0, backlog, 1000):
        await scheduler.enqueue(
            [
                item(f"low{n:05}", Priority.LOW, due=at(10 + n / 1000))
                for n in range(start, min(start + 1000, backlog))
            ],
            T0,
        )
    await scheduler.enqueue(
        [item("urgent", Priority.CRITICAL, due=at(20)), item("later", due=at(60))], T0
    )
    assert await scheduler.depth(at(19.999)) == depth_of(LOW=backlog, delayed=2)
    assert await scheduler.depth(at(20)) == depth_of(LOW=backlog, CRITICAL=1, delayed=1)

    # Claimable the moment it is due, with nothing moved first; the backlog stays in due order.
    claims = await scheduler.claim(3, at(20), LEASE)
    assert ids(claims) == ["urgent", "low00000", "low00001"]
    assert claims[0].priority is Priority.CRITICAL


async def test_claims_move_what_waits_in_the_earlier_layouts_delayed_set(
    scheduler: RedisScheduler, redis_client: aioredis.Redis
) -> None:
    """Before scheduled items waited in their priority's set, they waited in one delayed set
    (priority in the prio hash): an upgrade finds them there, and none may be lost."""
    delayed, prio = scheduler.keys[4], scheduler.keys[6]
    backlog = LEGACY_PER_CLAIM + 5  # more than one claim moves
    await redis_client.zadd(
        delayed, {f"old{n:05}": since_epoch(at(n / 1000)) for n in range(backlog)}
    )
    await redis_client.hset(
        prio, mapping={f"old{n:05}": Priority.MEDIUM.value for n in range(backlog)}
    )
    await redis_client.zadd(
        delayed,
        {
            "old-high": since_epoch(at(5)),
            "old-orphan": since_epoch(at(6)),
            "old-later": since_epoch(at(60)),
        },
    )
    await redis_client.hset(prio, mapping={"old-high": Priority.HIGH.value, "old-later": 1})

    claims = await scheduler.claim(2, at(10), LEASE)
    # The earliest due first: the first claim moved those, and serves them in due order.
    assert ids(claims) == ["old00000", "old00001"]
    assert await redis_client.zcard(delayed) == backlog + 3 - LEGACY_PER_CLAIM

    claims = await scheduler.claim(2, at(10), LEASE)
    # Everything left moved, due or not: HIGH first, then MEDIUM's backlog in due order.
    assert ids(claims) == ["old-high", "old00002"]
    assert await redis_client.exists(delayed) == 0
    # A lost priority is served as LOW rather than lost.
    assert await scheduler.depth(at(10)) == depth_of(MEDIUM=backlog - 3, LOW=1, delayed=1, leased=4)
    assert "old-orphan" in ids(await scheduler.claim(backlog, at(10), LEASE))
    assert ids(await scheduler.claim(10, at(60), LEASE)) == ["old-later"]


async def test_expired_lease_is_recovered_and_claimable_again(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue([item("n1")], T0)
    [first] = await scheduler.claim(1, T0, LEASE)

    assert await scheduler.claim(1, at(10), LEASE) == []
    assert await scheduler.recover_expired_leases(at(29.999), 100) == 0
    assert await scheduler.recover_expired_leases(at(30), 100) == 1
    assert await scheduler.depth(at(30)) == depth_of(MEDIUM=1)

    [second] = await scheduler.claim(1, at(31), LEASE)
    assert second.notification_id == "n1"
    assert second.priority is Priority.MEDIUM
    assert second.token > first.token


async def test_recover_respects_limit(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue([item(f"n{i}") for i in range(5)], T0)
    await scheduler.claim(5, T0, LEASE)

    assert await scheduler.recover_expired_leases(at(30), 3) == 3
    assert await scheduler.recover_expired_leases(at(30), 3) == 2
    assert await scheduler.recover_expired_leases(at(30), 3) == 0


async def test_stale_holder_cannot_disturb_new_holder(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue([item("n1")], T0)
    [stale] = await scheduler.claim(1, T0, LEASE)
    await scheduler.recover_expired_leases(at(30), 100)
    [fresh] = await scheduler.claim(1, at(31), LEASE)

    assert await scheduler.ack(stale) is False
    assert await scheduler.retry_at(stale, at(32), at(32)) is False
    assert await scheduler.extend(stale, at(32), timedelta(hours=1)) is False

    # The fresh lease is intact: still leased, not claimable, deadline not moved by the extend.
    assert await scheduler.depth(at(32)) == depth_of(leased=1)
    assert await scheduler.claim(10, at(32), LEASE) == []
    just_before = fresh.lease_deadline - timedelta(milliseconds=1)
    assert await scheduler.recover_expired_leases(just_before, 10) == 0
    assert await scheduler.ack(fresh) is True


async def test_stale_holder_fails_even_before_reclaim(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue([item("n1")], T0)
    [stale] = await scheduler.claim(1, T0, LEASE)
    await scheduler.recover_expired_leases(at(30), 100)

    assert await scheduler.extend(stale, at(31), LEASE) is False
    assert await scheduler.ack(stale) is False
    # The recovered item is still waiting, not dropped by the failed ack.
    assert ids(await scheduler.claim(1, at(31), LEASE)) == ["n1"]


async def test_ack_drops_the_item_once(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue([item("n1")], T0)
    [claim] = await scheduler.claim(1, T0, LEASE)

    assert await scheduler.ack(claim) is True
    assert await scheduler.ack(claim) is False
    assert not await scheduler.contains("n1")
    assert await scheduler.recover_expired_leases(at(3600), 100) == 0
    assert await scheduler.claim(10, at(3600), LEASE) == []


async def test_acks_made_together_go_in_one_call_each_with_its_own_answer(
    scheduler: RedisScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    await scheduler.enqueue([item(f"n{i}") for i in range(5)], T0)
    claims = await scheduler.claim(5, T0, LEASE)
    await scheduler.recover_expired_leases(at(30), 1)  # n0's lease lapses: that ack is stale
    calls = 0
    run = scheduler._run

    async def counting(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        return await run(*args)

    monkeypatch.setattr(scheduler, "_run", counting)
    # The same claim twice: the second ack finds the first already done, as one after the other.
    answers = await asyncio.gather(*(scheduler.ack(c) for c in [*claims, claims[1]]))

    assert answers == [False, True, True, True, True, False]
    assert calls == 1
    assert [await scheduler.contains(f"n{i}") for i in range(5)] == [True] + [False] * 4


async def test_extend_moves_the_deadline(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue([item("n1")], T0)
    [claim] = await scheduler.claim(1, T0, LEASE)

    assert await scheduler.extend(claim, at(20), LEASE) is True

    assert await scheduler.recover_expired_leases(at(49.999), 10) == 0
    assert await scheduler.recover_expired_leases(at(50), 10) == 1


async def test_retry_at_makes_the_item_due_later(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue([item("n1", Priority.HIGH)], T0)
    [claim] = await scheduler.claim(1, T0, LEASE)

    assert await scheduler.retry_at(claim, at(10), at(1)) is True
    assert (await scheduler.depth(at(1)))["delayed"] == 1
    assert (await scheduler.depth(at(1)))["leased"] == 0
    assert await scheduler.claim(1, at(9.999), LEASE) == []
    # The old lease is gone, so the old claim no longer owns anything.
    assert await scheduler.ack(claim) is False

    [again] = await scheduler.claim(1, at(10), LEASE)
    assert again.notification_id == "n1"
    assert again.priority is Priority.HIGH
    assert again.token > claim.token


async def test_retry_at_in_the_past_is_ready_at_once(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue([item("n1", Priority.LOW)], T0)
    [claim] = await scheduler.claim(1, T0, LEASE)

    assert await scheduler.retry_at(claim, T0, at(1)) is True
    assert (await scheduler.depth(at(1)))["LOW"] == 1
    assert ids(await scheduler.claim(1, at(1), LEASE)) == ["n1"]


async def test_enqueue_is_idempotent(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue([item("n1"), item("n1"), item("n1")], T0)
    await scheduler.enqueue([item("n1")], T0)

    depth = await scheduler.depth(T0)
    assert sum(depth.values()) == 1
    assert ids(await scheduler.claim(10, T0, LEASE)) == ["n1"]


async def test_enqueue_moves_a_waiting_item(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue([item("n1", Priority.LOW, due=at(60))], T0)
    await scheduler.enqueue([item("n2", Priority.HIGH)], T0)

    await scheduler.enqueue([item("n1", Priority.CRITICAL, due=T0)], T0)

    depth = await scheduler.depth(T0)
    assert depth["delayed"] == 0
    assert depth["CRITICAL"] == 1
    claims = await scheduler.claim(10, T0, LEASE)
    assert ids(claims) == ["n1", "n2"]
    assert claims[0].priority is Priority.CRITICAL


async def test_enqueue_can_postpone_a_ready_item(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue([item("n1")], T0)
    await scheduler.enqueue([item("n1", due=at(60))], T0)

    assert await scheduler.claim(10, at(59), LEASE) == []
    assert ids(await scheduler.claim(10, at(60), LEASE)) == ["n1"]


async def test_enqueue_leaves_a_leased_item_leased(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue([item("n1")], T0)
    [claim] = await scheduler.claim(1, T0, LEASE)

    await scheduler.enqueue([item("n1", Priority.CRITICAL, due=T0)], at(1))

    assert await scheduler.depth(at(1)) == depth_of(leased=1)
    assert await scheduler.claim(10, at(1), LEASE) == []
    assert await scheduler.ack(claim) is True


async def test_remove_cancels_waiting_items(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue([item("ready"), item("delayed", due=at(60))], T0)

    await scheduler.remove("ready")
    await scheduler.remove("delayed")
    await scheduler.remove("never-enqueued")

    assert not await scheduler.contains("ready")
    assert not await scheduler.contains("delayed")
    assert await scheduler.claim(10, at(60), LEASE) == []


async def test_remove_leaves_a_held_lease_alone(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue([item("n1", Priority.HIGH)], T0)
    [claim] = await scheduler.claim(1, T0, LEASE)

    await scheduler.remove("n1")

    assert await scheduler.contains("n1")
    assert await scheduler.extend(claim, at(1), LEASE) is True
    # The holder can still retry it, with its priority intact.
    assert await scheduler.retry_at(claim, at(2), at(2)) is True
    [again] = await scheduler.claim(1, at(2), LEASE)
    assert again.priority is Priority.HIGH


async def test_starvation_guard_serves_an_old_low_item(redis_client: aioredis.Redis) -> None:
    scheduler = RedisScheduler(redis_client, starvation_after=timedelta(seconds=30))
    await scheduler.enqueue([item("low", Priority.LOW, due=T0)], T0)
    await scheduler.enqueue([item(f"high{i}", Priority.HIGH, due=at(10)) for i in range(5)], at(10))

    # Exactly starvation_after old is not yet "older than" the threshold.
    [c] = await scheduler.claim(1, at(30), LEASE)
    assert c.notification_id == "high0"

    [c] = await scheduler.claim(1, at(30.001), LEASE)
    assert c.notification_id == "low"
    assert c.priority is Priority.LOW

    [c] = await scheduler.claim(1, at(30.002), LEASE)
    assert c.notification_id == "high1"


async def test_starvation_guard_under_sustained_high_load(redis_client: aioredis.Redis) -> None:
    scheduler = RedisScheduler(redis_client, starvation_after=timedelta(seconds=30))
    await scheduler.enqueue([item("low", Priority.LOW)], T0)

    served_low_at: float | None = None
    # Each second two HIGH items arrive and only one is served: HIGH alone never drains.
    for second in range(1, 60):
        now = at(second)
        await scheduler.enqueue(
            [item(f"h{second}a", Priority.HIGH, now), item(f"h{second}b", Priority.HIGH, now)],
            now,
        )
        [c] = await scheduler.claim(1, now, LEASE)
        if c.notification_id == "low":
            served_low_at = second
            break

    # Strict priority alone would never reach it: the HIGH backlog grows every second.
    assert served_low_at == 31


async def test_aged_items_go_oldest_first_across_priorities(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue(
        [
            item("medium-old", Priority.MEDIUM, at(-100)),
            item("low-older", Priority.LOW, at(-200)),
            item("critical-fresh", Priority.CRITICAL, T0),
        ],
        T0,
    )

    assert ids(await scheduler.claim(10, T0, LEASE)) == [
        "low-older",
        "medium-old",
        "critical-fresh",
    ]


async def test_claim_limit_is_respected(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue([item(f"n{i}", due=at(-10 + i)) for i in range(5)], T0)

    assert await scheduler.claim(0, T0, LEASE) == []
    assert ids(await scheduler.claim(3, T0, LEASE)) == ["n0", "n1", "n2"]
    assert ids(await scheduler.claim(10, T0, LEASE)) == ["n3", "n4"]
    assert await scheduler.claim(10, T0, LEASE) == []


async def test_claim_limit_with_aged_items(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue([item(f"old{i}", Priority.LOW, at(-100 + i)) for i in range(4)], T0)
    await scheduler.enqueue([item("fresh", Priority.CRITICAL)], T0)

    assert ids(await scheduler.claim(2, T0, LEASE)) == ["old0", "old1"]
    assert (await scheduler.depth(T0))["leased"] == 2


async def test_concurrent_claims_never_share_an_item(scheduler: RedisScheduler) -> None:
    await scheduler.enqueue([item(f"n{i}") for i in range(100)], T0)

    batches = await asyncio.gather(*(scheduler.claim(15, T0, LEASE) for _ in range(10)))

    claimed = [c.notification_id for batch in batches for c in batch]
    assert len(claimed) == 100
    assert len(set(claimed)) == 100
    tokens = [c.token for batch in batches for c in batch]
    assert len(set(tokens)) == 100


async def test_scripts_survive_script_flush(
    redis_client: aioredis.Redis, scheduler: RedisScheduler
) -> None:
    await scheduler.enqueue([item("n1")], T0)
    assert await scheduler.claim(10, at(100), LEASE) != []

    await redis_client.script_flush()
    loaded = await redis_client.script_exists(scheduler._claim.sha, scheduler._enqueue.sha)
    assert loaded == [False, False]

    await scheduler.enqueue([item("n2", Priority.HIGH)], T0)
    claims = await scheduler.claim(10, T0, LEASE)

    assert ids(claims) == ["n2"]
    assert await redis_client.script_exists(scheduler._claim.sha) == [True]


async def test_depth_and_contains(scheduler: RedisScheduler) -> None:
    assert await scheduler.depth(T0) == depth_of()
    assert not await scheduler.contains("x")

    await scheduler.enqueue(
        [
            item("l", Priority.LOW),
            item("m1", Priority.MEDIUM),
            item("m2", Priority.MEDIUM),
            item("c", Priority.CRITICAL),
            item("d", Priority.HIGH, at(60)),
        ],
        T0,
    )
    await scheduler.claim(1, T0, LEASE)

    assert await scheduler.depth(T0) == depth_of(LOW=1, MEDIUM=2, delayed=1, leased=1)
    for nid in ("l", "m1", "m2", "c", "d"):
        assert await scheduler.contains(nid), nid
    assert not await scheduler.contains("x")


async def test_keys_share_one_cluster_slot_and_namespace(redis_client: aioredis.Redis) -> None:
    a = RedisScheduler(redis_client, namespace="tenant-a")
    b = RedisScheduler(redis_client, namespace="tenant-b")
    await a.enqueue([item("n1", Priority.LOW), item("n2", due=at(60))], T0)
    await a.claim(1, T0, LEASE)
    await b.enqueue([item("n1", Priority.HIGH)], T0)

    assert not await b.contains("n2")
    assert ids(await b.claim(10, T0, LEASE)) == ["n1"]

    stored = [k.decode() if isinstance(k, bytes) else k for k in await redis_client.keys("*")]
    assert stored
    for ns, scheduler in (("tenant-a", a), ("tenant-b", b)):
        mine = [k for k in stored if k.startswith(f"{{{ns}}}:")]
        assert set(mine) <= set(scheduler.keys)
        assert len({key_slot(k.encode()) for k in scheduler.keys}) == 1
    assert all(k.startswith(("{tenant-a}:", "{tenant-b}:")) for k in stored)


async def test_default_key_layout(redis_client: aioredis.Redis) -> None:
    assert RedisScheduler(redis_client).keys == (
        "{notifyd}:ready:1",
        "{notifyd}:ready:2",
        "{notifyd}:ready:3",
        "{notifyd}:ready:4",
        "{notifyd}:delayed",
        "{notifyd}:leased",
        "{notifyd}:prio",
        "{notifyd}:fence",
        "{notifyd}:lease_token",
        "{notifyd}:trace",
    )


async def test_rejects_naive_datetimes_and_bad_arguments(
    redis_client: aioredis.Redis, scheduler: RedisScheduler
) -> None:
    naive = datetime(2025, 3, 1, 12, 0, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        await scheduler.claim(1, naive, LEASE)
    with pytest.raises(ValueError, match="timezone-aware"):
        await scheduler.enqueue([item("n1", due=naive)], T0)
    with pytest.raises(ValueError, match="lease"):
        await scheduler.claim(1, T0, timedelta(0))
    with pytest.raises(ValueError, match="namespace"):
        RedisScheduler(redis_client, namespace="a{b}")
    with pytest.raises(ValueError, match="starvation_after"):
        RedisScheduler(redis_client, starvation_after=timedelta(0))


# -- trace contexts ---------------------------------------------------------------------------

TRACE_A = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_B = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class CurrentTrace:
    """Stands in for the tracing module: the context of whatever span is current."""

    def __init__(self, value: str = "") -> None:
        self.value = value

    def __call__(self) -> str:
        return self.value


def traced(redis_client: aioredis.Redis, current: CurrentTrace) -> RedisScheduler:
    return RedisScheduler(redis_client, trace_context=current)


async def test_claim_carries_the_context_of_the_enqueue(redis_client: aioredis.Redis) -> None:
    current = CurrentTrace(TRACE_A)
    scheduler = traced(redis_client, current)
    await scheduler.enqueue([item("n1")], T0)
    current.value = TRACE_B
    await scheduler.enqueue([item("n2")], T0)
    current.value = ""

    claims = await scheduler.claim(10, T0, LEASE)

    assert {c.notification_id: c.trace_context for c in claims} == {"n1": TRACE_A, "n2": TRACE_B}


async def test_an_item_given_its_own_context_keeps_it(redis_client: aioredis.Redis) -> None:
    scheduler = traced(redis_client, CurrentTrace(TRACE_A))
    own = QueueItem(
        notification_id="n1", priority=Priority.MEDIUM, due_at=T0, trace_context=TRACE_B
    )
    await scheduler.enqueue([own], T0)

    [claim] = await scheduler.claim(1, T0, LEASE)

    assert claim.trace_context == TRACE_B


async def test_a_re_enqueue_without_a_context_keeps_the_stored_one(
    redis_client: aioredis.Redis,
) -> None:
    current = CurrentTrace(TRACE_A)
    scheduler = traced(redis_client, current)
    await scheduler.enqueue([item("n1", due=at(60))], T0)
    # The reconciler re-enqueues outside any span; a replay does so inside a new request's.
    current.value = ""
    await scheduler.enqueue([item("n1")], T0)
    assert (await scheduler.claim(1, T0, LEASE))[0].trace_context == TRACE_A


async def test_the_context_survives_retries_and_lease_recovery(
    redis_client: aioredis.Redis,
) -> None:
    scheduler = traced(redis_client, CurrentTrace(TRACE_A))
    await scheduler.enqueue([item("n1")], T0)
    [first] = await scheduler.claim(1, T0, LEASE)
    assert await scheduler.retry_at(first, at(5), T0)
    [second] = await scheduler.claim(1, at(5), LEASE)
    assert await scheduler.recover_expired_leases(at(5) + LEASE, 10) == 1
    [third] = await scheduler.claim(1, at(5) + LEASE, LEASE)

    assert [c.trace_context for c in (first, second, third)] == [TRACE_A] * 3


async def test_ack_and_remove_drop_the_context(redis_client: aioredis.Redis) -> None:
    scheduler = traced(redis_client, CurrentTrace(TRACE_A))
    trace_key = scheduler.keys[9]
    await scheduler.enqueue([item("acked"), item("removed", due=at(60)), item("held")], T0)
    claims = {c.notification_id: c for c in await scheduler.claim(2, T0, LEASE)}
    assert set(claims) == {"acked", "held"}

    assert await scheduler.ack(claims["acked"])
    await scheduler.remove("removed")
    # A held lease keeps its context for its holder, like its priority.
    await scheduler.remove("held")

    assert await redis_client.hkeys(trace_key) == [b"held"]
    assert await scheduler.ack(claims["held"])
    assert not await redis_client.exists(trace_key)


async def test_without_tracing_the_hash_is_never_written_nor_read(
    redis_client: aioredis.Redis,
) -> None:
    traced_side = traced(redis_client, CurrentTrace(TRACE_A))
    plain = RedisScheduler(redis_client)
    await plain.enqueue([item("n1")], T0)
    assert not await redis_client.exists(plain.keys[9])
    # Queued by a traced API process, delivered by a worker that does not trace: the claim
    # does not look the context up, and the ack still drops it (no leak).
    await traced_side.enqueue([item("n2")], T0)
    claims = await plain.claim(10, T0, LEASE)
    assert [c.trace_context for c in claims] == ["", ""]
    for claim in claims:
        assert await plain.ack(claim)
    assert not await redis_client.exists(plain.keys[9])
