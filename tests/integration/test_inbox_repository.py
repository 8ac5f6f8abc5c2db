"""The inbox log on the real PostgreSQL: per-user seqs assigned in commit order, the unread count
each event carries, reading after a seq, the head, and pruning."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from application.ports.repositories import InboxEventKind
from domain.notification import (
    Channel,
    Content,
    DeliveryResult,
    NewNotification,
    Notification,
    Priority,
)
from infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
DELIVERED = InboxEventKind.NOTIFICATION_DELIVERED
READ = InboxEventKind.NOTIFICATIONS_READ


def delivered_in_app(nid: str, *, tenant: str = "tenant-a", user: str = "user-1") -> Notification:
    n = Notification.accept(
        NewNotification(
            request_id=f"req-{nid}",
            user_id=user,
            channel=Channel.IN_APP,
            priority=Priority.MEDIUM,
            category="mention",
            content=Content("t", "b"),
        ),
        id=nid,
        tenant_id=tenant,
        caller="tests",
        fingerprint=f"fp-{nid}",
        now=T0,
    )
    n.begin_attempt(T0)
    n.record_success(T0, DeliveryResult(provider="inbox", delivered=True))
    return n


async def deliver(
    uow: SqlUnitOfWorkFactory, nid: str, *, tenant: str = "tenant-a", user: str = "user-1"
) -> int:
    """Deliver and log in one transaction, as DeliverNotification does; the event's seq."""
    async with uow() as u:
        assert await u.notifications.add(delivered_in_app(nid, tenant=tenant, user=user))
        event = await u.inbox.append(tenant, user, DELIVERED, T0, notification_id=nid)
        await u.commit()
    return event.seq


async def waiting_on_a_lock(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
            ).scalar_one()
        )


async def eventually_waiting(engine: AsyncEngine) -> None:
    for _ in range(200):
        if await waiting_on_a_lock(engine) == 1:
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the second appender never waited on the first one's lock")


async def test_seqs_rise_by_one_per_user_and_tenant(uow: SqlUnitOfWorkFactory) -> None:
    assert [await deliver(uow, f"a-{i}") for i in range(3)] == [1, 2, 3]
    assert await deliver(uow, "other-user", user="user-2") == 1
    assert await deliver(uow, "other-tenant", tenant="tenant-b") == 1
    assert await deliver(uow, "a-3") == 4


async def test_an_event_carries_what_its_transaction_sees(uow: SqlUnitOfWorkFactory) -> None:
    await deliver(uow, "n-1")
    async with uow() as u:
        assert await u.notifications.add(delivered_in_app("n-2"))
        first = await u.inbox.append("tenant-a", "user-1", DELIVERED, T0, notification_id="n-2")
        # Uncommitted changes of its own transaction count too.
        [n1] = await u.notifications.get_many("tenant-a", ["n-1"])
        n1.mark_read(T0 + timedelta(seconds=1))
        await u.notifications.save(n1)
        second = await u.inbox.append(
            "tenant-a", "user-1", READ, T0 + timedelta(seconds=1), read_ids=["n-1"]
        )
        await u.commit()
    assert (first.seq, first.kind, first.unread_count, first.notification_id) == (
        2,
        DELIVERED,
        2,
        "n-2",
    )
    assert (second.seq, second.kind, second.unread_count, second.read_ids) == (
        3,
        READ,
        1,
        ("n-1",),
    )


async def test_after_reads_in_seq_order_from_a_seq_with_a_limit(
    uow: SqlUnitOfWorkFactory,
) -> None:
    for i in range(5):
        await deliver(uow, f"n-{i}")
    await deliver(uow, "other", user="user-2")
    async with uow() as u:
        later = await u.inbox.after("tenant-a", "user-1", 1, 3)
        rest = await u.inbox.after("tenant-a", "user-1", 4, 100)
        none = await u.inbox.after("tenant-a", "user-1", 5, 100)
        nobody = await u.inbox.after("tenant-a", "nobody", 0, 100)
    assert [(e.seq, e.notification_id, e.unread_count) for e in later] == [
        (2, "n-1", 2),
        (3, "n-2", 3),
        (4, "n-3", 4),
    ]
    assert [e.seq for e in rest] == [5]
    assert later[0].created_at == T0
    assert none == nobody == []


async def test_head_is_the_last_and_oldest_kept_seq(uow: SqlUnitOfWorkFactory) -> None:
    async with uow() as u:
        assert await u.inbox.head("tenant-a", "user-1") == (0, 0)
    for i in range(3):
        await deliver(uow, f"n-{i}")
    async with uow() as u:
        assert await u.inbox.head("tenant-a", "user-1") == (3, 1)
        assert await u.inbox.head("tenant-b", "user-1") == (0, 0)


async def test_a_rolled_back_append_leaves_no_gap(uow: SqlUnitOfWorkFactory) -> None:
    await deliver(uow, "n-1")
    async with uow() as u:
        assert (await u.inbox.append("tenant-a", "user-1", READ, T0)).seq == 2
    assert await deliver(uow, "n-2") == 2


async def test_concurrent_appenders_for_one_user_commit_in_seq_order(
    uow: SqlUnitOfWorkFactory, clean_db: AsyncEngine
) -> None:
    first = uow()
    async with first as u1:
        assert await u1.notifications.add(delivered_in_app("n-1"))
        e1 = await u1.inbox.append("tenant-a", "user-1", DELIVERED, T0, notification_id="n-1")

        async def second_appender() -> tuple[int, int]:
            async with uow() as u2:
                assert await u2.notifications.add(delivered_in_app("n-2"))
                e2 = await u2.inbox.append(
                    "tenant-a", "user-1", DELIVERED, T0, notification_id="n-2"
                )
                await u2.commit()
            return e2.seq, e2.unread_count

        second = asyncio.create_task(second_appender())
        await eventually_waiting(clean_db)
        assert not second.done()
        # While the first holds the head, readers see neither event (no seq 2 before seq 1).
        async with uow() as reader:
            assert await reader.inbox.after("tenant-a", "user-1", 0, 10) == []
        await u1.commit()
    # The second got the next seq, and its count includes the first's committed delivery.
    assert (e1.seq, e1.unread_count) == (1, 1)
    assert await asyncio.wait_for(second, 10) == (2, 2)
    async with uow() as reader:
        events = await reader.inbox.after("tenant-a", "user-1", 0, 10)
    assert [(e.seq, e.notification_id) for e in events] == [(1, "n-1"), (2, "n-2")]


async def test_appenders_for_different_users_do_not_wait(uow: SqlUnitOfWorkFactory) -> None:
    async with uow() as u1:
        await u1.inbox.append("tenant-a", "user-1", READ, T0)
        # A different user's head: no lock to wait for, or this would hang the test.
        assert await asyncio.wait_for(deliver(uow, "n-2", user="user-2"), 5) == 1
        await u1.commit()


async def test_prune_drops_old_events_but_keeps_each_users_latest(
    uow: SqlUnitOfWorkFactory,
) -> None:
    for i in range(4):
        await deliver(uow, f"n-{i}")
    await deliver(uow, "lonely", user="user-2")
    async with uow() as u:
        fresh = await u.inbox.append("tenant-a", "user-1", READ, T0 + timedelta(days=8))
        await u.commit()
    cutoff = T0 + timedelta(days=1)
    async with uow() as u:
        assert await u.inbox.prune(cutoff, 3) == 3
        await u.commit()
    async with uow() as u:
        assert await u.inbox.prune(cutoff, 3) == 1
        assert await u.inbox.prune(cutoff, 3) == 0
        await u.commit()
    async with uow() as u:
        assert [e.seq for e in await u.inbox.after("tenant-a", "user-1", 0, 10)] == [fresh.seq]
        assert await u.inbox.head("tenant-a", "user-1") == (5, 5)
        assert await u.inbox.head("tenant-a", "user-2") == (1, 1)
    # The log goes on from where it was.
    assert await deliver(uow, "n-next") == 6


async def test_concurrent_pruners_take_turns_without_blocking_appenders(
    uow: SqlUnitOfWorkFactory,
) -> None:
    for i in range(6):
        await deliver(uow, f"n-{i}")
    cutoff = T0 + timedelta(days=1)
    async with uow() as first:
        assert await first.inbox.prune(cutoff, 2) == 2
        # Another worker's pruner skips the rows the first one holds instead of waiting...
        async with uow() as second:
            assert await asyncio.wait_for(second.inbox.prune(cutoff, 10), 5) == 3
            await second.commit()
        # ...and the user's appender is not held up by either (heads are never locked).
        assert await asyncio.wait_for(deliver(uow, "n-next"), 5) == 7
        await first.commit()
    async with uow() as u:
        assert [e.seq for e in await u.inbox.after("tenant-a", "user-1", 0, 10)] == [6, 7]
