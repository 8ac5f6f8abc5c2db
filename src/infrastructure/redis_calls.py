"""What every Redis adapter shares: which errors mean Redis cannot be reached, and times as the
integers Lua scripts compare."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Final

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from application.errors import Unavailable

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MS: Final = timedelta(milliseconds=1)


def since_epoch(moment: datetime, unit: timedelta = MS) -> int:
    """Whole ``unit``s since the epoch."""
    # A naive datetime would be read as local time by .timestamp(), silently shifting times.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"timezone-aware datetime required, got naive {moment!r}")
    # Integer timedelta division: float timestamps would round some millisecond values.
    return (moment - EPOCH) // unit


def duration_ms(duration: timedelta, what: str) -> int:
    ms = duration // MS
    if ms <= 0:
        raise ValueError(f"{what} must be at least 1 ms, got {duration!r}")
    return ms


def text(value: bytes | str) -> str:
    # The client may or may not have decode_responses set; accept both.
    return value.decode() if isinstance(value, bytes) else value


@contextlib.contextmanager
def unavailable_if_unreachable() -> Iterator[None]:
    """Redis unreachable becomes Unavailable, which the edge maps to UNAVAILABLE."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as error:
        raise Unavailable("redis", str(error)) from error
