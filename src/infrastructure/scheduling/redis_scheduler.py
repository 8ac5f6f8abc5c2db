"""The ``Scheduler`` port on Redis sorted sets, every mutation in one Lua script.

Key layout (``ns`` = namespace; the ``{ns}`` hash tag keeps every key on one Cluster slot, which
multi-key Lua scripts require):

- ``{ns}:ready:<1..4>``  sorted set per priority value, score = due time in ms (FIFO inside)
- ``{ns}:delayed``       sorted set, score = due time in ms
- ``{ns}:leased``        sorted set, score = lease deadline in ms
- ``{ns}:prio``          hash id -> priority value
- ``{ns}:fence``         counter; one INCR per claimed item gives the fencing token
- ``{ns}:lease_token``   hash id -> token of the current lease
- ``{ns}:trace``         hash id -> W3C trace context of the enqueue (only while tracing), so
                         the delivery continues the trace of the request that queued it

An id is in at most one of ready/delayed/leased. Times always come from the caller's ``now``,
never from Redis or the local clock, so that tests and every worker agree on one clock.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.resources
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from application.ports.scheduler import Claim, PriorityStats, QueueItem, QueueStats
from domain.notification import Priority
from infrastructure.redis_calls import (
    EPOCH,
    MS,
    duration_ms,
    since_epoch,
    text,
    unavailable_if_unreachable,
)

# Bounds the work one claim does when a large backlog of scheduled sends falls due at once;
# the rest is promoted by the following claims.
PROMOTE_PER_CLAIM: Final = 1000
# Bounds the priority lookups one stats() snapshot makes per delayed/leased set: a backlog of
# scheduled sends beyond it is counted, but not split by priority.
STATS_SCAN_LIMIT: Final = 2_000

# Acks that arrive together go to Redis as one script call of at most this many.
MAX_ACKS_PER_CALL: Final = 256

_PRIORITIES_LOW_TO_HIGH: Final = tuple(sorted(Priority))


def _from_ms(ms: int) -> datetime:
    return EPOCH + ms * MS


@functools.cache
def _script_source(name: str) -> str:
    return importlib.resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


class RedisScheduler:
    """Priority delivery queue with leases and fencing tokens, see the module docstring."""

    def __init__(
        self,
        client: Redis,
        *,
        namespace: str = "notifyd",
        starvation_after: timedelta = timedelta(seconds=30),
        trace_context: Callable[[], str] | None = None,
    ) -> None:
        """``trace_context`` gives the current W3C trace context as text ("" for none); None
        (tracing off) leaves the trace hash out of enqueue and claim altogether."""
        if not namespace or "{" in namespace or "}" in namespace:
            # Braces would change the hash tag and scatter the keys over Cluster slots.
            raise ValueError(f"namespace must be non-empty and brace-free, got {namespace!r}")
        self._client = client
        self._namespace = namespace
        self._starvation_ms = duration_ms(starvation_after, "starvation_after")
        self._trace_context = trace_context
        prefix = f"{{{namespace}}}"
        self._ready_keys: dict[Priority, str] = {
            p: f"{prefix}:ready:{p.value}" for p in _PRIORITIES_LOW_TO_HIGH
        }
        # Every script receives the same KEYS in this order; the Lua files index into it.
        self._keys: tuple[str, ...] = (
            *(self._ready_keys[p] for p in _PRIORITIES_LOW_TO_HIGH),
            f"{prefix}:delayed",
            f"{prefix}:leased",
            f"{prefix}:prio",
            f"{prefix}:fence",
            f"{prefix}:lease_token",
            f"{prefix}:trace",
        )
        # register_script's Script runs EVALSHA and reloads on NOSCRIPT, so a Redis restart or
        # SCRIPT FLUSH costs one extra round-trip instead of an error.
        self._enqueue = self._script("enqueue.lua")
        self._claim = self._script("claim.lua")
        self._ack = self._script("ack.lua")
        self._retry_at = self._script("retry_at.lua")
        self._extend = self._script("extend.lua")
        self._remove = self._script("remove.lua")
        self._recover = self._script("recover.lua")
        self._depth = self._script("depth.lua")
        self._contains = self._script("contains.lua")
        self._stats = self._script("stats.lua")
        # Acks waiting for the next call: a worker finishes many deliveries close together,
        # and a round trip (and a pooled connection) each cost more than the ack itself.
        self._acks: list[tuple[Claim, asyncio.Future[bool]]] = []
        self._acker: asyncio.Task[None] | None = None

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def keys(self) -> tuple[str, ...]:
        """All keys this scheduler touches (ready 1..4, delayed, leased, prio, fence, tokens,
        trace contexts)."""
        return self._keys

    def _script(self, name: str) -> AsyncScript:
        return self._client.register_script(_script_source(name))

    async def _run(self, script: AsyncScript, *args: str | int) -> Any:
        with unavailable_if_unreachable():
            return await script(keys=self._keys, args=args)

    async def enqueue(self, items: Sequence[QueueItem], now: datetime) -> None:
        now_ms = since_epoch(now)
        if not items:
            return
        current = self._trace_context() if self._trace_context is not None else ""
        args: list[str | int] = [now_ms]
        for item in items:
            args += [
                item.notification_id,
                Priority(item.priority).value,
                since_epoch(item.due_at),
                item.trace_context or current,
            ]
        await self._run(self._enqueue, *args)

    async def claim(self, limit: int, now: datetime, lease: timedelta) -> list[Claim]:
        now_ms = since_epoch(now)
        lease_ms = duration_ms(lease, "lease")
        if limit <= 0:
            return []
        raw = await self._run(
            self._claim,
            now_ms,
            limit,
            now_ms + lease_ms,
            now_ms - self._starvation_ms,
            PROMOTE_PER_CLAIM,
            0 if self._trace_context is None else 1,
        )
        stride = 4 if self._trace_context is None else 5
        return [
            Claim(
                notification_id=text(raw[i]),
                priority=Priority(int(raw[i + 1])),
                token=int(raw[i + 2]),
                lease_deadline=_from_ms(int(raw[i + 3])),
                trace_context=text(raw[i + 4]) if stride == 5 else "",
            )
            for i in range(0, len(raw), stride)
        ]

    async def ack(self, claim: Claim) -> bool:
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._acks.append((claim, answer))
        if self._acker is None:
            self._acker = asyncio.create_task(self._send_acks())
        return await answer

    async def _send_acks(self) -> None:
        """Sends the acks waiting, in calls of MAX_ACKS_PER_CALL, until none is left; those
        made meanwhile go in the next call."""
        batch: list[tuple[Claim, asyncio.Future[bool]]] = []
        try:
            # The acks made in the same turn of the event loop as the first join it.
            await asyncio.sleep(0)
            while self._acks:
                batch = [a for a in self._acks[:MAX_ACKS_PER_CALL] if not a[1].done()]
                del self._acks[:MAX_ACKS_PER_CALL]
                if not batch:
                    continue
                args: list[str | int] = []
                for claim, _ in batch:
                    args += [claim.notification_id, claim.token]
                try:
                    flags = await self._run(self._ack, *args)
                except Exception as error:
                    for _, answer in batch:
                        _fail(answer, error)
                else:
                    for (_, answer), flag in zip(batch, flags, strict=True):
                        if not answer.done():
                            answer.set_result(bool(flag))
                batch = []
        except BaseException as error:
            for _, answer in batch + self._acks:
                _fail(answer, error)
            self._acks = []
            raise
        finally:
            self._acker = None

    async def retry_at(self, claim: Claim, due_at: datetime, now: datetime) -> bool:
        result = await self._run(
            self._retry_at,
            claim.notification_id,
            claim.token,
            since_epoch(now),
            since_epoch(due_at),
            Priority(claim.priority).value,
        )
        return bool(result)

    async def extend(self, claim: Claim, now: datetime, lease: timedelta) -> bool:
        deadline_ms = since_epoch(now) + duration_ms(lease, "lease")
        return bool(await self._run(self._extend, claim.notification_id, claim.token, deadline_ms))

    async def remove(self, notification_id: str) -> None:
        await self._run(self._remove, notification_id)

    async def recover_expired_leases(self, now: datetime, limit: int) -> int:
        now_ms = since_epoch(now)
        if limit <= 0:
            return 0
        return int(await self._run(self._recover, now_ms, limit))

    async def depth(self) -> dict[str, int]:
        """Ready counts per priority name, plus "delayed" and "leased"; one atomic snapshot."""
        counts = [int(c) for c in await self._run(self._depth)]
        names = [p.name for p in _PRIORITIES_LOW_TO_HIGH] + ["delayed", "leased"]
        return dict(zip(names, counts, strict=True))

    async def stats(self, now: datetime) -> QueueStats:
        """Per priority: ready, delayed and leased counts and the oldest due item's age; one
        read-only script, so one round trip and one consistent snapshot."""
        now_ms = since_epoch(now)
        raw = [int(v) for v in await self._run(self._stats, now_ms, STATS_SCAN_LIMIT)]
        by_priority: dict[Priority, PriorityStats] = {}
        for i, priority in enumerate(_PRIORITIES_LOW_TO_HIGH):
            ready, delayed, leased, oldest_ms = raw[4 * i : 4 * i + 4]
            age = max(now_ms - oldest_ms, 0) * MS if oldest_ms >= 0 else timedelta(0)
            by_priority[priority] = PriorityStats(ready, delayed, leased, age)
        return QueueStats(by_priority, unattributed_delayed=raw[16], unattributed_leased=raw[17])

    async def contains(self, notification_id: str) -> bool:
        """Whether the id is ready, delayed or leased."""
        return (await self.contains_many([notification_id]))[0]

    async def contains_many(self, notification_ids: Sequence[str]) -> list[bool]:
        """For each id, whether it is ready, delayed or leased (one round trip)."""
        if not notification_ids:
            return []
        return [bool(f) for f in await self._run(self._contains, *notification_ids)]

    async def run_id(self) -> str:
        """The Redis server's run_id: it changes when the server restarts (possibly empty)."""
        with unavailable_if_unreachable():
            info = await self._client.info("server")
        return str(info["run_id"])


def _fail(answer: asyncio.Future[bool], error: BaseException) -> None:
    if answer.done():
        return
    if isinstance(error, asyncio.CancelledError):
        answer.cancel()
    else:
        answer.set_exception(error)
        # Its caller may have gone (cancelled): no "exception never retrieved" warning then.
        answer.exception()
