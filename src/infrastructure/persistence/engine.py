"""The async SQLAlchemy engine over psycopg 3."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import orjson
import psycopg
from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

# A pooled connection idle longer than this is pinged before it is handed out. One that
# came back just now has just proven itself: pinging it too (pool_pre_ping) cost a round
# trip per transaction, a tenth of a worker's CPU per delivery.
IDLE_BEFORE_PING_SECONDS = 1.0
_CHECKED_IN_AT = "notifyd_checked_in_at"


def sqlalchemy_url(url: str) -> str:
    """Accept plain libpq URLs (postgresql://...) and pick the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def json_dumps(value: Any) -> bytes:
    """JSONB columns as orjson writes them: a delivery's row update spent more CPU in
    json.dumps than in its SQL. Datetimes become ISO 8601 text, which Postgres reads back into
    timestamp columns (save_many sends whole rows as JSON). The rare value orjson refuses (an
    integer beyond 64 bits, a non-string key) goes through json."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, default=_iso_datetime).encode()


def _iso_datetime(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_loads(data: str | bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def create_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    engine = create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5},
        json_serializer=json_dumps,
        json_deserializer=json_loads,
    )
    ping_when_idle(engine, IDLE_BEFORE_PING_SECONDS)
    return engine


def ping_when_idle(engine: AsyncEngine, idle_seconds: float) -> None:
    """Ping a connection on checkout when it sat in the pool for ``idle_seconds`` or more; a
    dead one (Postgres restarted meanwhile) is replaced before anyone uses it. A connection
    that dies within the interval fails its first statement instead, and SQLAlchemy then
    recycles every connection opened before that failure."""
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "checkin")
    def _checked_in(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _checked_out(
        dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
    ) -> None:
        since = record.info.get(_CHECKED_IN_AT)
        if since is None or time.monotonic() - since < idle_seconds:
            return
        # The pool treats DisconnectionError as "try another connection" (up to three times);
        # SELECT 1 failing in any way means this one is not fit to hand out.
        try:
            engine.dialect.do_ping(dbapi_connection)
        except psycopg.Error as error:
            raise exc.DisconnectionError(str(error)) from error
