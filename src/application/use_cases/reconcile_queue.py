"""ReconcileQueue: Postgres is the truth; put back into Redis whatever is unsettled and missing."""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta
from typing import Final

from application.errors import Unavailable
from application.ports.clock import Clock
from application.ports.leadership import Hold, Leadership
from application.ports.repositories import QueueEntry, UnitOfWorkFactory
from application.ports.scheduler import QueueItem, Scheduler

log = logging.getLogger(__name__)

BATCH = 1000
# One worker reconciles at a time: each would otherwise read the same rows and ask Redis the
# same questions, and a steady pass over a large backlog costs every worker alike.
ROLE: Final = "reconcile-queue"


class ReconcileQueue:
    """Scans unsettled notifications by id in slices, resuming where the last call stopped, so a
    large backlog is covered over several calls without one call doing it all. When the queue's
    storage was replaced (Redis restarted: its run_id changed), one call scans all; a flush keeps
    the run_id and is repaired by the sliced scans.

    Only the holder of the reconciler's role scans; the others return at once. The holder
    extends its term before every slice, so the term has to outlast one slice and the rest of
    a housekeeping round, not a whole scan; a holder that lost the role stops within one
    slice. A holder whose scan fails (Postgres or Redis unreachable from it) hands the role
    over and leaves it to the others for a while: the safety net must not hang on the one
    worker that cannot run it."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        scheduler: Scheduler,
        clock: Clock,
        leadership: Leadership,
        grace: timedelta = timedelta(seconds=5),
        batches_per_call: int = 5,
        term: timedelta = timedelta(seconds=30),
        sit_out: timedelta = timedelta(seconds=10),
    ) -> None:
        self._uow = uow
        self._scheduler = scheduler
        self._clock = clock
        self._leadership = leadership
        self._term = term
        # Long enough for every other worker to ask for the role once (two housekeeping
        # rounds), short enough that a failure all workers shared (Redis restarting) delays
        # the rebuild by no more than that.
        self._sit_out = sit_out
        # Rows younger than the grace period may be between their commit and their enqueue.
        self._grace = grace
        self._batches_per_call = batches_per_call
        self._cursor = ""
        self._run_id: str | None = None
        self._sitting_out_until: datetime | None = None

    async def execute(self) -> int:
        """Returns how many notifications were re-enqueued (0 when another worker reconciles)."""
        if self._sitting_out_until is not None and self._clock.now() < self._sitting_out_until:
            return 0
        if not await self._lead():
            return 0
        try:
            return await self._reconcile()
        except Unavailable:
            self._sitting_out_until = self._clock.now() + self._sit_out
            with contextlib.suppress(Unavailable):
                await self.resign()
            raise

    async def resign(self) -> None:
        """Hand the role over now (at shutdown) rather than when the term runs out."""
        self._run_id = None
        await self._leadership.resign(ROLE)

    async def _lead(self) -> bool:
        hold = await self._leadership.hold(ROLE, self._term)
        if hold is Hold.KEPT:
            return True
        # Taken anew or refused: someone else may have watched the queue meanwhile, and this
        # worker has not. Holding the role, it starts over with a full scan, as at start-up.
        self._run_id = None
        return hold is Hold.TAKEN

    async def _reconcile(self) -> int:
        run_id = await self._scheduler.run_id()
        first = self._run_id is None
        replaced = not first and run_id != self._run_id
        self._run_id = run_id
        if first or replaced:
            # At start-up the queue may have been lost while no worker watched it. Re-enqueueing
            # a young row is harmless (enqueue is idempotent), so no grace period here.
            if replaced:
                log.warning("the queue's Redis was replaced (run_id changed): rebuilding it")
            self._cursor = ""
            return await self._scan(batches=None, grace=timedelta(0))
        return await self._scan(batches=self._batches_per_call, grace=self._grace)

    async def _scan(self, batches: int | None, grace: timedelta) -> int:
        requeued = 0
        done = 0
        while batches is None or done < batches:
            if done and not await self._lead():
                break
            now = self._clock.now()
            async with self._uow() as uow:
                entries = await uow.notifications.in_flight(self._cursor, BATCH)
            done += 1
            if not entries:
                self._cursor = ""
                break
            present = await self._scheduler.contains_many([e.id for e in entries])
            absent = [
                e
                for e, here in zip(entries, present, strict=True)
                if not here and e.updated_at <= now - grace
            ]
            missing = await self._still_unsettled(absent)
            if missing:
                await self._scheduler.enqueue(missing, now)
                requeued += len(missing)
            self._cursor = entries[-1].id
            if len(entries) < BATCH:
                self._cursor = ""
                break
        return requeued

    async def _still_unsettled(self, absent: list[QueueEntry]) -> list[QueueItem]:
        """A row read before a worker finished it looks missing once the worker acks: keep only
        the rows that are unchanged since they were read."""
        if not absent:
            return []
        async with self._uow() as uow:
            now_rows = {
                e.id: e for e in await uow.notifications.in_flight_among([e.id for e in absent])
            }
        return [
            QueueItem(e.id, e.priority, e.due_at)
            for e in absent
            if (current := now_rows.get(e.id)) is not None and current.updated_at == e.updated_at
        ]
