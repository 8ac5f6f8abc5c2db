"""SendNotification's group commit: concurrent sends of a tenant share one transaction, and
each still gets the answer it would have got alone."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from application.errors import IdempotencyConflict, Unavailable
from application.principal import Principal
from application.use_cases.commands import AddressInput, SendNotificationCommand
from application.use_cases.policy_gate import PolicyGate
from application.use_cases.send_notification import SendNotification, SendOutcome
from domain.errors import ValidationFailed
from domain.notification import Channel, Content, Status
from domain.policy import CapAction, Category, Limits
from tests.unit.application.fakes import World

ALICE = Principal("tenant-a", "orders", "key-a")
BOB = Principal("tenant-b", "billing", "key-b")
NOON = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)


def command(n: int, **kw: object) -> SendNotificationCommand:
    base: dict[str, object] = {
        "request_id": f"req-{n}",
        "user_id": f"user-{n}",
        "channel": Channel.EMAIL,
        "category": "order_shipped",
        "content": Content("Shipped", f"Order {n} is on its way"),
        "address": AddressInput("email", f"user{n}@example.com"),
    }
    base.update(kw)
    return SendNotificationCommand(**base)  # type: ignore[arg-type]


def sender(world: World, dedup: timedelta = timedelta(0), max_batch: int = 256) -> SendNotification:
    return SendNotification(
        world.uow,
        world.scheduler,
        world.preparer,
        world.clock,
        PolicyGate(dedup),
        max_batch=max_batch,
        max_batches_in_flight=1,
    )


async def send_all(
    use_case: SendNotification, *calls: tuple[Principal, SendNotificationCommand]
) -> list[SendOutcome | BaseException]:
    """The calls made concurrently, as gRPC handlers would."""
    return await asyncio.gather(*(use_case.execute(p, c) for p, c in calls), return_exceptions=True)


def outcome(result: SendOutcome | BaseException) -> SendOutcome:
    assert isinstance(result, SendOutcome), result
    return result


@pytest.fixture(autouse=True)
def at_noon(world: World) -> None:
    world.clock.set(NOON)


async def test_concurrent_sends_share_one_transaction_and_one_enqueue(world: World) -> None:
    results = await send_all(sender(world), *((ALICE, command(n)) for n in range(20)))
    stored = [outcome(r).notification for r in results]
    assert [n.request_id for n in stored] == [f"req-{n}" for n in range(20)]
    assert all(n.status is Status.QUEUED and n.version == 1 for n in stored)
    assert world.db.commits == 1
    assert world.scheduler.calls.count("enqueue") == 1
    assert [i.notification_id for i in world.scheduler.enqueued] == [n.id for n in stored]
    assert {world.db.row(n.id).request_id for n in stored} == {f"req-{n}" for n in range(20)}


async def test_batches_are_bounded_and_per_tenant(world: World) -> None:
    calls = [(ALICE, command(n)) for n in range(5)] + [(BOB, command(n)) for n in range(3)]
    results = await send_all(sender(world, max_batch=2), *calls)
    tenants = [outcome(r).notification.tenant_id for r in results]
    assert tenants == ["tenant-a"] * 5 + ["tenant-b"] * 3
    # Alice's five in batches of 2, 2, 1; Bob's three in 2, 1.
    assert world.db.commits == 5


async def test_one_bad_request_is_refused_alone(world: World) -> None:
    results = await send_all(
        sender(world),
        (ALICE, command(1)),
        (ALICE, command(2, address=AddressInput("email", "not-an-address"))),
        (ALICE, command(3)),
    )
    assert isinstance(results[1], ValidationFailed)
    assert [v.field for v in results[1].violations] == ["address.email"]
    assert outcome(results[0]).notification.status is Status.QUEUED
    assert outcome(results[2]).notification.status is Status.QUEUED
    assert world.db.commits == 1
    assert len(world.scheduler.enqueued) == 2


async def test_a_request_id_repeated_in_a_batch_is_a_replay_or_a_conflict(world: World) -> None:
    results = await send_all(
        sender(world),
        (ALICE, command(1)),
        (ALICE, command(1)),
        (ALICE, command(1, content=Content("Other", "A different request"))),
    )
    first = outcome(results[0])
    again = outcome(results[1])
    assert first.replayed is False
    assert again.replayed is True
    assert again.notification.id == first.notification.id
    assert isinstance(results[2], IdempotencyConflict)
    assert len(world.db.notifications) == 1


async def test_a_retry_of_a_stored_request_in_a_batch_gets_its_first_answer(world: World) -> None:
    use_case = sender(world)
    first = await use_case.execute(ALICE, command(1))
    results = await send_all(use_case, (ALICE, command(1)), (ALICE, command(2)))
    assert outcome(results[0]).replayed is True
    assert outcome(results[0]).notification.id == first.notification.id
    assert outcome(results[1]).replayed is False
    assert len(world.db.notifications) == 2


async def test_duplicates_within_a_batch_are_folded_into_the_first(world: World) -> None:
    same = {
        "user_id": "user-42",
        "address": AddressInput("email", "ada@example.com"),
        "content": Content("Your code", "123456"),
    }
    results = await send_all(
        sender(world, dedup=timedelta(minutes=5)),
        (ALICE, command(1, **same)),
        (ALICE, command(2, **same)),
    )
    first, second = outcome(results[0]), outcome(results[1])
    assert second.deduplicated is True
    assert second.notification.id == first.notification.id
    assert len(world.db.notifications) == 1
    assert world.db.aliases[("tenant-a", "req-2")][1] == first.notification.id
    assert ("tenant-a", "user-42") in world.db.recipient_locks
    assert len(world.scheduler.enqueued) == 1


async def test_a_cap_counts_the_batch_itself(world: World) -> None:
    world.db.categories[("tenant-a", "digest")] = Category(
        "digest", limits=Limits(per_hour=1), cap_action=CapAction.SUPPRESS
    )
    same_user = {"user_id": "user-42", "category": "digest"}
    results = await send_all(
        sender(world), (ALICE, command(1, **same_user)), (ALICE, command(2, **same_user))
    )
    assert outcome(results[0]).notification.status is Status.QUEUED
    assert outcome(results[1]).notification.status is Status.SUPPRESSED
    assert world.db.recipient_locks == [("tenant-a", "user-42")]


async def test_a_failed_shared_transaction_falls_back_to_one_per_request(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_case = sender(world)

    async def broken(*args: object) -> object:
        raise RuntimeError("the shared transaction failed")

    monkeypatch.setattr(use_case, "_store_together", broken)
    results = await send_all(use_case, (ALICE, command(1)), (ALICE, command(2)))
    assert [outcome(r).notification.request_id for r in results] == ["req-1", "req-2"]
    assert world.db.commits == 2


async def test_postgres_unavailable_fails_the_whole_batch_retryably(world: World) -> None:
    world.db.unavailable_commits = 1
    use_case = sender(world)
    results = await send_all(use_case, (ALICE, command(1)), (ALICE, command(2)))
    assert all(isinstance(r, Unavailable) for r in results)
    assert world.db.notifications == {}
    retried = await send_all(use_case, (ALICE, command(1)), (ALICE, command(2)))
    assert [outcome(r).replayed for r in retried] == [False, False]


async def test_an_enqueue_failure_is_unavailable_for_the_stored_ones_only(world: World) -> None:
    async def down(*args: object) -> None:
        raise Unavailable("redis", "connection refused")

    world.scheduler.enqueue = down  # type: ignore[method-assign]
    results = await send_all(
        sender(world),
        (ALICE, command(1)),
        (ALICE, command(2, address=AddressInput("email", "not-an-address"))),
    )
    assert isinstance(results[0], Unavailable)
    assert isinstance(results[1], ValidationFailed)
    # Stored: the retry is a replay, which enqueues again.
    assert world.db.row(next(iter(world.db.notifications))).request_id == "req-1"


async def test_a_caller_gone_before_its_batch_starts_leaves_nothing(world: World) -> None:
    use_case = sender(world)
    waiting = asyncio.ensure_future(use_case.execute(ALICE, command(1)))
    others = asyncio.ensure_future(send_all(use_case, (ALICE, command(2))))
    await asyncio.sleep(0)
    waiting.cancel()
    await others
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert {n.request_id for n in world.db.notifications.values()} == {"req-2"}


async def test_a_caller_gone_while_its_batch_runs_leaves_its_send_stored_and_queued(
    world: World,
) -> None:
    use_case = sender(world)
    enqueue = world.scheduler.enqueue
    release = asyncio.Event()
    committed = asyncio.Event()

    async def slow_enqueue(*args: Any) -> None:
        committed.set()
        await release.wait()
        await enqueue(*args)

    world.scheduler.enqueue = slow_enqueue  # type: ignore[method-assign]
    waiting = asyncio.ensure_future(use_case.execute(ALICE, command(1)))
    other = asyncio.ensure_future(use_case.execute(ALICE, command(2)))
    await committed.wait()
    waiting.cancel()
    release.set()
    assert (await other).notification.request_id == "req-2"
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert len(world.scheduler.enqueued) == 2
