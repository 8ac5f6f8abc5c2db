"""The engine's pool: a connection that died while it sat idle is replaced before use."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from infrastructure.persistence.engine import ping_when_idle, sqlalchemy_url

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def pinged_engine(database_url: str, idle: float) -> AsyncIterator[AsyncEngine]:
    """One pooled connection, pinged on checkout after ``idle`` seconds in the pool."""
    engine = create_async_engine(sqlalchemy_url(database_url), pool_size=1, max_overflow=0)
    ping_when_idle(engine, idle)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one())


async def _terminate(engine: AsyncEngine, pid: int) -> None:
    # From a connection of its own: the pooled one must stay in the pool, dead.
    other = create_async_engine(engine.url, poolclass=sa.pool.NullPool)
    async with other.connect() as conn:
        await conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    await other.dispose()


async def test_a_connection_killed_while_idle_is_replaced_on_checkout(database_url: str) -> None:
    async with pinged_engine(database_url, idle=0.2) as engine:
        first = await _backend_pid(engine)
        await _terminate(engine, first)
        await asyncio.sleep(0.3)

        assert await _backend_pid(engine) != first


async def test_a_connection_back_within_the_idle_interval_is_not_pinged(
    database_url: str,
) -> None:
    # The round trip saved per transaction: the dead connection is only found by using it.
    async with pinged_engine(database_url, idle=60) as engine:
        first = await _backend_pid(engine)
        await _terminate(engine, first)

        with pytest.raises(sa.exc.OperationalError):
            await _backend_pid(engine)
        # SQLAlchemy dropped it on that failure: the next checkout gets a live connection.
        assert await _backend_pid(engine) != first
