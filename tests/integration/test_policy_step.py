"""The policy step on real Postgres: concurrent accepts for one recipient are serialised, so
a cap or a duplicate window holds under races; the queries behind them use their indexes."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from application.principal import Principal
from application.use_cases.commands import SendNotificationCommand
from application.use_cases.policy_gate import PolicyGate
from application.use_cases.preparation import NotificationPreparer
from application.use_cases.send_notification import SendNotification
from domain.notification import Channel, Content, Rendered, Status, TemplateRef
from domain.policy import Category, Limits
from infrastructure.clock import SystemClock, UuidV7Generator
from infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from infrastructure.scheduling import RedisScheduler

pytestmark = pytest.mark.integration

ACME = Principal("acme", "orders")


class NoTemplates:
    async def render(self, tenant_id: str, ref: TemplateRef, channel: Channel) -> Rendered:
        raise AssertionError("these tests send inline content")


def use_case(
    uow: SqlUnitOfWorkFactory, scheduler: RedisScheduler, dedup: timedelta = timedelta(0)
) -> SendNotification:
    preparer = NotificationPreparer(NoTemplates(), UuidV7Generator(), frozenset({Channel.IN_APP}))
    return SendNotification(uow, scheduler, preparer, SystemClock(), PolicyGate(dedup))


def command(
    request_id: str, body: str = "Hello", category: str = "news"
) -> SendNotificationCommand:
    return SendNotificationCommand(
        request_id=request_id,
        user_id="user-1",
        channel=Channel.IN_APP,
        category=category,
        content=Content("Hi", body),
    )


async def define(uow: SqlUnitOfWorkFactory, category: Category) -> None:
    async with uow() as u:
        await u.categories.put("acme", replace(category, updated_at=datetime.now(UTC)))
        await u.commit()


async def test_concurrent_sends_never_exceed_a_cap(
    uow: SqlUnitOfWorkFactory, scheduler: RedisScheduler
) -> None:
    await define(uow, Category("news", limits=Limits(per_hour=3)))
    send = use_case(uow, scheduler)
    outcomes = await asyncio.gather(
        *(send.execute(ACME, command(f"r{i}", body=f"n{i}")) for i in range(12))
    )
    statuses = [o.notification.status for o in outcomes]
    assert statuses.count(Status.QUEUED) == 3
    assert statuses.count(Status.SUPPRESSED) == 9
    async with uow() as u:
        counted = await u.notifications.counted_due_times(
            "acme", "user-1", "news", datetime.now(UTC) - timedelta(days=1)
        )
    assert len(counted) == 3


async def test_concurrent_duplicates_make_one_notification(
    uow: SqlUnitOfWorkFactory, scheduler: RedisScheduler
) -> None:
    send = use_case(uow, scheduler, dedup=timedelta(minutes=5))
    outcomes = await asyncio.gather(*(send.execute(ACME, command(f"d{i}")) for i in range(10)))
    ids = {o.notification.id for o in outcomes}
    assert len(ids) == 1
    assert sum(1 for o in outcomes if o.deduplicated) == 9
    async with uow() as u:
        rows = await u.notifications.ids_for_user("acme", "user-1", "", 100)
        alias = await u.notifications.get_alias("acme", "d3")
    assert len(rows) == 1
    first = next(o for o in outcomes if not o.deduplicated)
    assert alias is None or alias[1] == first.notification.id
    # Every folded request is bound: a retry of any of them returns the same notification.
    retries = await asyncio.gather(*(send.execute(ACME, command(f"d{i}")) for i in range(10)))
    assert {r.notification.id for r in retries} == ids
    assert all(r.replayed for r in retries)


async def test_a_duplicate_is_not_folded_into_a_cancelled_notification(
    uow: SqlUnitOfWorkFactory, scheduler: RedisScheduler
) -> None:
    send = use_case(uow, scheduler, dedup=timedelta(minutes=5))
    first = (await send.execute(ACME, command("c1"))).notification
    async with uow() as u:
        n = await u.notifications.get("acme", first.id)
        n.cancel(datetime.now(UTC))
        await u.notifications.save(n)
        await u.commit()
    second = await send.execute(ACME, command("c2"))
    assert not second.deduplicated
    assert second.notification.id != first.id


async def test_cap_and_duplicate_queries_can_use_an_index(
    uow: SqlUnitOfWorkFactory, clean_db: sa.ext.asyncio.AsyncEngine
) -> None:
    async with clean_db.connect() as conn:
        await conn.execute(sa.text("SET enable_seqscan = off"))
        caps = (
            await conn.execute(
                sa.text(
                    "EXPLAIN SELECT due_at FROM notifications WHERE tenant_id = 'a' "
                    "AND user_id = 'u' AND category = 'c' AND due_at > now()"
                )
            )
        ).scalars()
        dedup = (
            await conn.execute(
                sa.text(
                    "EXPLAIN SELECT id FROM notifications WHERE tenant_id = 'a' "
                    "AND user_id = 'u' AND created_at > now() AND content_hash = 'h'"
                )
            )
        ).scalars()
        plans = ("\n".join(caps), "\n".join(dedup))
    # With sequential scans priced out, one still shows up only when no index can serve.
    for plan in plans:
        assert "Seq Scan" not in plan
        assert "Index" in plan
