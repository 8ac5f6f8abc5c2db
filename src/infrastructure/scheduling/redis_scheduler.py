"""The ``Scheduler`` port on Redis sorted sets, every mutation in one Lua script.

Key layout (``ns`` = namespace; the ``{ns}`` hash tag keeps every key on one Cluster slot, which
multi-key Lua scripts require):

- ``{ns}:ready:<1..4>``  sorted set per priority value, score = due time in ms (FIFO inside).
                         Members scored up to a claim's ``now`` are due; a scheduled send or
                         a retry waits in the same set, scored later, with no step to move it
                         when it falls due: it is claimable, in priority order, from then.
- ``{ns}:delayed``       sorted set, score = due time in ms: where scheduled items waited in
                         an earlier layout; claims move what is left there (an upgrade)
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

import functools
import importlib.resources
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from application.group_commit import GroupCommit
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

# Bounds the work one claim does moving items out of the earlier layout's delayed set.
LEGACY_PER_CLAIM: Final = 1000
# Bounds the priority lookups one stats() snapshot makes per leased (or earlier layout's
# delayed) set: items beyond it are counted, but not split by priority.
STATS_SCAN_LIMIT: Final = 2_000

# Acks made together go to Redis as one script call of at most this many.
MAX_ACKS_PER_CALL: Final = 256

_PRIORITIES_LOW_TO_HIGH: Final = tuple(sorted(Priority))


def _from_ms(ms: int) -> datetime:
    return EPOCH + ms * MS


@functools.cache
def script_source(name: str) -> str:
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
        self._claim = self._script("claim.lua", prelude="legacy_delayed.lua")
        self._ack = self._script("ack.lua")
        self._retry_at = self._script("retry_at.lua")
        self._extend = self._script("extend.lua")
        self._remove = self._script("remove.lua")
        self._recover = self._script("recover.lua")
        self._depth = self._script("depth.lua")
        self._contains = self._script("contains.lua")
        self._stats = self._script("stats.lua")
        # Acks made together go in one call: a worker finishes many deliveries close
        # together, and a round trip (and a pooled connection) each cost more than the ack.
        self._acks: GroupCommit[None, Claim, bool] = GroupCommit(
            lambda _, claims: self._ack_together(claims),
            max_batch=MAX_ACKS_PER_CALL,
            max_in_flight=1,
        )

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def keys(self) -> tuple[str, ...]:
        """All keys this scheduler touches (ready 1..4, delayed, leased, prio, fence, tokens,
        trace contexts)."""
        return self._keys

    def _script(self, name: str, prelude: str = "") -> AsyncScript:
        """The script in ``name``, preceded by the definitions in ``prelude`` if given."""
        head = script_source(prelude) + "\n" if prelude else ""
        return self._client.register_script(head + script_source(name))

    async def _run(self, script: AsyncScript, *args: str | int) -> Any:
        with unavailable_if_unreachable():
            return await script(keys=self._keys, args=args)

    async def enqueue(self, items: Sequence[QueueItem], now: datetime) -> None:
        if not items:
            return
        current = self._trace_context() if self._trace_context is not None else ""
        args: list[str | int] = []
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
            LEGACY_PER_CLAIM,
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
        return await self._acks.submit(None, claim)

    async def _ack_together(self, claims: Sequence[Claim]) -> list[bool]:
        args: list[str | int] = []
        for claim in claims:
            args += [claim.notification_id, claim.token]
        flags = await self._run(self._ack, *args)
        return [bool(flag) for flag in flags]

    async def retry_at(self, claim: Claim, due_at: datetime, now: datetime) -> bool:
        result = await self._run(
            self._retry_at,
            claim.notification_id,
            claim.token,
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

    async def depth(self, now: datetime) -> dict[str, int]:
        """Counts of the items due by ``now`` per priority name, plus "delayed" (scheduled
        later) and "leased"; one atomic snapshot."""
        counts = [int(c) for c in await self._run(self._depth, since_epoch(now))]
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
