"""Group commit: concurrent requests written together, one transaction for many.

Nothing waits for a batch to fill. A request that finds a free slot starts a batch at once
(with whatever else arrived in the same turn of the event loop); requests arriving while every
slot is busy queue up, and the next free slot takes all of them. Under light load a batch is
one request; under heavy load each transaction, commit and fsync serve many."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

from application.errors import Unavailable

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")

# What a batch run returns for each of its items, in order: a result or the item's own error.
BatchRun = Callable[[K, Sequence[T]], Awaitable[Sequence[R | BaseException]]]


def unless_unavailable(error: Exception) -> bool:
    """An ``alone_after``: a batch that failed for one item's data is run again item by item;
    one that failed because Postgres or Redis is away fails every item at once, as it would
    each alone (each caller retries)."""
    return not isinstance(error, Unavailable)


class GroupCommit(Generic[K, T, R]):
    """``distinct`` names what two items of one batch must not share (a request_id, a
    notification id): the later one waits for the next batch. ``alone_after`` says which
    failures of a whole batch are worth running its items again one by one, so that what one
    item brought (a value the database refuses) fails that item only."""

    def __init__(
        self,
        run: BatchRun[K, T, R],
        *,
        max_batch: int,
        max_in_flight: int,
        distinct: Callable[[T], Hashable] | None = None,
        alone_after: Callable[[Exception], bool] = lambda _: False,
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._distinct = distinct
        self._alone_after = alone_after
        # Items of one key share a batch (a tenant: its locks and rows go together).
        self._pending: dict[K, list[tuple[T, asyncio.Future[R]]]] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._kick_scheduled = False

    async def submit(self, key: K, item: T) -> R:
        """The item's result once its batch is committed, or the item's error. A caller that
        stops waiting does not take the item out of a batch already running."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append((item, future))
        if not self._kick_scheduled:
            # On the next turn, so that everything arriving in this one shares the batch.
            self._kick_scheduled = True
            asyncio.get_running_loop().call_soon(self._kick)
        return await future

    def _kick(self) -> None:
        self._kick_scheduled = False
        while self._pending and len(self._running) < self._max_in_flight:
            key = next(iter(self._pending))
            batch, rest = self._take(self._pending.pop(key))
            if rest:
                # Back in the queue, behind the other keys.
                self._pending[key] = rest
            if not batch:
                continue
            task = asyncio.create_task(self._write(key, batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _take(
        self, queued: list[tuple[T, asyncio.Future[R]]]
    ) -> tuple[list[tuple[T, asyncio.Future[R]]], list[tuple[T, asyncio.Future[R]]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        rest: list[tuple[T, asyncio.Future[R]]] = []
        seen: set[Hashable] = set()
        for entry in queued:
            item, future = entry
            if future.cancelled():
                continue  # its caller left before its batch started: not run
            mark = self._distinct(item) if self._distinct is not None else None
            if len(batch) >= self._max_batch or (mark is not None and mark in seen):
                rest.append(entry)
                continue
            if mark is not None:
                seen.add(mark)
            batch.append(entry)
        return batch, rest

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._kick()

    async def _write(self, key: K, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run(key, [item for item, _ in batch])
        except Exception as error:
            if len(batch) > 1 and self._alone_after(error):
                log.warning("a batch of %d failed (%s); running each alone", len(batch), error)
                for entry in batch:
                    await self._write(key, [entry])
                return
            results = [error] * len(batch)
        except BaseException:
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
