"""The in-app inbox: MarkAsRead, GetUnreadCount, and the pruning of its change log."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from application.ports.clock import Clock
from application.ports.inbox_notifier import InboxNotifier
from application.ports.repositories import InboxEventKind, UnitOfWorkFactory
from application.principal import Principal
from application.use_cases.id_lists import distinct_ids, load_all
from domain.errors import ValidationFailed

log = logging.getLogger(__name__)


class MarkAsRead:
    def __init__(
        self, uow: UnitOfWorkFactory, clock: Clock, inbox_notifier: InboxNotifier | None = None
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._inbox_notifier = inbox_notifier

    async def execute(self, principal: Principal, ids: Sequence[str]) -> int:
        """All or nothing: an unknown id leaves every notification as it was."""
        unique = distinct_ids(ids)
        now = self._clock.now()
        read_by_user: dict[str, list[str]] = {}
        async with self._uow() as uow:
            found = await load_all(uow.notifications, principal.tenant_id, unique)
            for n in found:
                if n.mark_read(now):
                    read_by_user.setdefault(n.user_id, []).append(n.id)
                    await uow.notifications.save(n)
            # One event per user whose inbox changed, in the same transaction as the change.
            # Users in sorted order: two calls spanning the same users lock their heads in the
            # same order, so they cannot deadlock.
            for user_id in sorted(read_by_user):
                await uow.inbox.append(
                    principal.tenant_id,
                    user_id,
                    InboxEventKind.NOTIFICATIONS_READ,
                    now,
                    read_ids=read_by_user[user_id],
                )
            await uow.commit()
        for user_id in sorted(read_by_user):
            await self._wake(principal.tenant_id, user_id)
        return sum(len(read) for read in read_by_user.values())

    async def _wake(self, tenant_id: str, user_id: str) -> None:
        if self._inbox_notifier is None:
            return
        try:
            await self._inbox_notifier.publish(tenant_id, user_id)
        except Exception:
            # Streams also poll: a lost wake-up delays an event, it does not lose it.
            log.warning("could not wake the inbox streams of %s", user_id, exc_info=True)


class GetUnreadCount:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def execute(self, principal: Principal, user_id: str) -> int:
        if not user_id.strip():
            raise ValidationFailed.single("user_id", "required")
        async with self._uow() as uow:
            return await uow.notifications.count_unread(principal.tenant_id, user_id)


class PruneInboxEvents:
    """Drops inbox events older than ``keep`` (each user's latest stays), in batches of
    ``batch`` per transaction so no delete holds locks for long, at most once per ``interval``
    (a scan passes every user's kept latest event, so it is not run on every housekeeping
    tick). A stream resuming from a pruned cursor restarts from the current unread count."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        *,
        keep: timedelta = timedelta(days=7),
        batch: int = 1000,
        max_batches: int = 50,
        interval: timedelta = timedelta(hours=1),
    ) -> None:
        if keep <= timedelta(0) or batch < 1 or max_batches < 1:
            raise ValueError("keep must be positive, batch and max_batches at least 1")
        self._uow = uow
        self._clock = clock
        self._keep = keep
        self._batch = batch
        self._max_batches = max_batches
        self._interval = interval
        self._next_run: datetime | None = None

    async def execute(self) -> int:
        """How many events were dropped (0 when not due). A run that hits ``max_batches``
        leaves the rest for the next one."""
        now = self._clock.now()
        if self._next_run is not None and now < self._next_run:
            return 0
        self._next_run = now + self._interval
        dropped = 0
        for _ in range(self._max_batches):
            async with self._uow() as uow:
                count = await uow.inbox.prune(now - self._keep, self._batch)
                await uow.commit()
            dropped += count
            if count < self._batch:
                break
        return dropped
