"""ReconcileQueue: Postgres is the truth; put back into Redis whatever is due and missing."""

from __future__ import annotations

from datetime import timedelta

from application.ports.clock import Clock
from application.ports.repositories import UnitOfWorkFactory
from application.ports.scheduler import QueueItem, Scheduler


class ReconcileQueue:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        scheduler: Scheduler,
        clock: Clock,
        grace: timedelta = timedelta(seconds=5),
        horizon: timedelta = timedelta(days=3650),
    ) -> None:
        self._uow = uow
        self._scheduler = scheduler
        self._clock = clock
        # Rows younger than the grace period may be between their commit and their enqueue.
        self._grace = grace
        self._horizon = horizon

    async def execute(self, limit: int = 1000) -> int:
        """Returns how many notifications were re-enqueued."""
        now = self._clock.now()
        async with self._uow() as uow:
            candidates = await uow.notifications.due_without_lease(now + self._horizon, limit)
        missing = [
            QueueItem(n.id, n.priority, n.due_at)
            for n in candidates
            if n.updated_at <= now - self._grace and not await self._scheduler.contains(n.id)
        ]
        if missing:
            await self._scheduler.enqueue(missing, now)
        return len(missing)
