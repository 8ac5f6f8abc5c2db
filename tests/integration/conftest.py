"""Fixtures for integration tests on the real Postgres and Redis of tests/conftest.py."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy.ext.asyncio import AsyncEngine

from infrastructure.persistence.engine import create_engine
from infrastructure.persistence.tables import metadata
from infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from infrastructure.scheduling import RedisScheduler

# Every table the schema has (tables.py), so no test sees another's rows.
ALL_TABLES = tuple(metadata.tables)


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture
async def clean_db(engine: AsyncEngine) -> AsyncEngine:
    """Every table emptied before the test (rows of earlier tests never leak in)."""
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"TRUNCATE {', '.join(ALL_TABLES)} CASCADE"))
    return engine


@pytest.fixture
def uow(clean_db: AsyncEngine) -> SqlUnitOfWorkFactory:
    return SqlUnitOfWorkFactory(clean_db)


@pytest.fixture
def scheduler(redis_client: aioredis.Redis) -> RedisScheduler:
    return RedisScheduler(redis_client)


@pytest.fixture
async def unreachable_redis() -> AsyncIterator[aioredis.Redis]:
    """A client of a port nothing listens on, which gives up at the first refusal."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = aioredis.Redis(port=port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    yield client
    await client.aclose()
