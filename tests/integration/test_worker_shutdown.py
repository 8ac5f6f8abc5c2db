"""A worker stopped while its reconciler waits on Postgres: the round is cut off after the
grace, the role is handed over, and the connection pool stays usable."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from application.use_cases.reconcile_queue import ROLE, ReconcileQueue
from infrastructure.clock import SystemClock
from infrastructure.persistence.engine import create_engine
from infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from infrastructure.scheduling import RedisLeadership, RedisScheduler
from interfaces.worker.runner import Worker

pytestmark = pytest.mark.integration

NAMESPACE = "stuck-reconcile"


async def waiting_on_a_lock(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        waiting = await conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND query LIKE '%notifications%'"
            )
        )
        return int(waiting.scalar_one())


async def test_a_round_stuck_on_postgres_is_cut_off_at_stop_and_the_pool_recovers(
    clean_db: AsyncEngine, database_url: str, redis_client: aioredis.Redis
) -> None:
    engine = create_engine(database_url, 2)
    uow = SqlUnitOfWorkFactory(engine)
    scheduler = RedisScheduler(redis_client, namespace=NAMESPACE)
    leadership = RedisLeadership(redis_client, holder="worker-1", namespace=NAMESPACE)
    reconcile = ReconcileQueue(uow, scheduler, SystemClock(), leadership)
    worker = Worker(
        scheduler,
        object(),  # type: ignore[arg-type]  # nothing is queued: no delivery starts
        reconcile,
        SystemClock(),
        poll_interval=0.01,
    )
    stop = asyncio.Event()
    try:
        async with clean_db.begin() as holder:
            await holder.execute(sa.text("LOCK TABLE notifications IN ACCESS EXCLUSIVE MODE"))
            task = asyncio.create_task(worker.run(stop, grace=0.2))
            for _ in range(200):
                if await waiting_on_a_lock(clean_db):
                    break
                await asyncio.sleep(0.025)
            else:
                raise AssertionError("the reconciler never reached the locked table")
            assert await redis_client.get(leadership.key(ROLE)) == b"worker-1"
            stop.set()
            await asyncio.wait_for(task, timeout=5)
            assert await redis_client.get(leadership.key(ROLE)) is None
        # The lock is gone: the worker's pool answers again, on a sound connection.
        async with asyncio.timeout(5):
            async with uow() as u:
                assert await u.notifications.in_flight("", 10) == []
        assert await waiting_on_a_lock(clean_db) == 0
    finally:
        await asyncio.wait_for(engine.dispose(), timeout=5)
