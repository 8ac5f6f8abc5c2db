"""Fixtures shared by integration and e2e tests: one real Postgres and one real Redis per run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from infrastructure.embedded import EmbeddedPostgres, EmbeddedRedis


@pytest.fixture(scope="session")
def servers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def embedded_redis(servers_dir: Path) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(servers_dir / "redis") as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(embedded_redis: EmbeddedRedis) -> str:
    return embedded_redis.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def embedded_postgres(servers_dir: Path) -> Iterator[EmbeddedPostgres]:
    with EmbeddedPostgres(servers_dir / "pg") as server:
        yield server


@pytest.fixture(scope="session")
def database_url(embedded_postgres: EmbeddedPostgres) -> str:
    """A migrated database (SQLAlchemy URL)."""
    from infrastructure.persistence.migrations_runner import upgrade_to_head

    url = embedded_postgres.sqlalchemy_url()
    upgrade_to_head(url)
    return url
