"""Idempotency on real Postgres and Redis: concurrent retries, conflicts, unavailability."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from application.errors import IdempotencyConflict, Unavailable
from application.principal import Principal
from application.use_cases.commands import SendNotificationCommand
from application.use_cases.preparation import NotificationPreparer
from application.use_cases.send_notification import SendNotification
from domain.errors import ValidationFailed
from domain.notification import Channel, Content
from infrastructure.clock import SystemClock, UuidV7Generator
from infrastructure.persistence.engine import create_engine
from infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from infrastructure.scheduling import RedisScheduler
from infrastructure.templates import JinjaTemplateEngine, JinjaTemplateRenderer

pytestmark = pytest.mark.integration

ACME = Principal("acme", "orders")


def use_case(uow: SqlUnitOfWorkFactory, scheduler: RedisScheduler) -> SendNotification:
    preparer = NotificationPreparer(
        JinjaTemplateRenderer(uow, JinjaTemplateEngine()),
        UuidV7Generator(),
        frozenset({Channel.IN_APP}),
    )
    return SendNotification(uow, scheduler, preparer, SystemClock())


def command(request_id: str, title: str = "Hello") -> SendNotificationCommand:
    return SendNotificationCommand(
        request_id=request_id,
        user_id="user-1",
        channel=Channel.IN_APP,
        category="mention",
        content=Content(title, "body"),
    )


async def rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(sa.text("SELECT count(*) FROM notifications"))).scalar_one())


async def test_fifty_concurrent_identical_requests_make_one_notification(
    uow: SqlUnitOfWorkFactory, scheduler: RedisScheduler, clean_db: AsyncEngine
) -> None:
    send = use_case(uow, scheduler)
    request_id = f"req-{uuid.uuid4()}"
    outcomes = await asyncio.gather(*(send.execute(ACME, command(request_id)) for _ in range(50)))
    assert len({o.notification.id for o in outcomes}) == 1
    assert sum(not o.replayed for o in outcomes) == 1, "exactly one call created it"
    assert await rows(clean_db) == 1
    depth = await scheduler.depth(datetime.now(UTC))
    assert depth["MEDIUM"] == 1, "queued once, not fifty times"


async def test_concurrent_different_requests_with_one_id_yield_one_winner(
    uow: SqlUnitOfWorkFactory, scheduler: RedisScheduler, clean_db: AsyncEngine
) -> None:
    send = use_case(uow, scheduler)
    request_id = f"req-{uuid.uuid4()}"
    results = await asyncio.gather(
        *(send.execute(ACME, command(request_id, title=f"v{i}")) for i in range(10)),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    conflicts = [r for r in results if isinstance(r, IdempotencyConflict)]
    assert len(winners) == 1
    assert len(conflicts) == 9
    assert await rows(clean_db) == 1


async def test_postgres_unreachable_is_unavailable_and_writes_nothing(
    scheduler: RedisScheduler,
) -> None:
    unreachable = create_engine(
        "postgresql+psycopg://postgres@/notifyd?host=/nonexistent-socket-dir", pool_size=1
    )
    try:
        send = use_case(SqlUnitOfWorkFactory(unreachable), scheduler)
        with pytest.raises(Unavailable, match="postgres"):
            await send.execute(ACME, command(f"req-{uuid.uuid4()}"))
    finally:
        await unreachable.dispose()
    assert await scheduler.depth(datetime.now(UTC)) == dict.fromkeys(
        ["LOW", "MEDIUM", "HIGH", "CRITICAL", "delayed", "leased"], 0
    )


async def test_two_processes_racing_batches_of_the_same_requests_store_each_once(
    uow: SqlUnitOfWorkFactory, scheduler: RedisScheduler, clean_db: AsyncEngine
) -> None:
    # Two API processes, each storing concurrent sends in shared transactions (group commit):
    # their batches overlap on every request_id.
    first, second = use_case(uow, scheduler), use_case(uow, scheduler)
    ids = [f"req-{uuid.uuid4()}" for _ in range(100)]
    outcomes = await asyncio.gather(
        *(first.execute(ACME, command(r)) for r in ids),
        *(second.execute(ACME, command(r)) for r in ids),
    )
    for a, b in zip(outcomes[:100], outcomes[100:], strict=True):
        assert a.notification.id == b.notification.id
        assert a.notification.request_id == b.notification.request_id
        assert sorted([a.replayed, b.replayed]) == [False, True]
    assert await rows(clean_db) == 100
    assert (await scheduler.depth(datetime.now(UTC)))["MEDIUM"] == 100


async def test_a_batch_with_a_nul_character_still_stores_the_others(
    uow: SqlUnitOfWorkFactory, scheduler: RedisScheduler, clean_db: AsyncEngine
) -> None:
    send = use_case(uow, scheduler)
    results = await asyncio.gather(
        *(send.execute(ACME, command(f"req-{uuid.uuid4()}")) for _ in range(5)),
        send.execute(ACME, command(f"req-{uuid.uuid4()}", title="bad\x00title")),
        return_exceptions=True,
    )
    assert all(not isinstance(r, BaseException) for r in results[:5]), results
    assert isinstance(results[5], ValidationFailed)
    assert await rows(clean_db) == 5
