"""The in-app inbox: MarkAsRead, GetUnreadCount, and the pruning of its change log."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from application.ports.clock import Clock
from application.ports.inbox_notifier import InboxNotifier
from application.ports.repositories import InboxEventKind, UnitOfWork, UnitOfWorkFactory
from application.principal import Principal
from application.use_cases.id_lists import distinct_ids, load_all
from domain.errors import ValidationFailed

log = logging.getLogger(__name__)


async def log_reads(
    uow: UnitOfWork, tenant_id: str, read_by_user: Mapping[str, Sequence[str]], now: datetime
) -> None:
    """One NOTIFICATIONS_READ event per user whose inbox changed, in the transaction of the
    change. Users in sorted order: two transactions spanning the same users lock their heads
    in the same order, so they cannot deadlock."""
    for user_id in sorted(read_by_user):
        await uow.inbox.append(
            tenant_id,
            user_id,
            InboxEventKind.NOTIFICATIONS_READ,
            now,
            read_ids=read_by_user[user_id],
        )


async def wake_inboxes(
    notifier: InboxNotifier | None, tenant_id: str, user_ids: Iterable[str]
) -> None:
    """After the commit: tell the users' open streams to look."""
    if notifier is None:
        return
    for user_id in sorted(user_ids):
        try:
            await notifier.publish(tenant_id, user_id)
        except Exception:
            # Streams also poll: a lost wake-up delays an event, it does not lose it.
            log.warning("could not wake the inbox streams of %s", user_id, exc_info=True)


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
            await log_reads(uow, principal.tenant_id, read_by_user, now)
            await uow.commit()
        await wake_inboxes(self._inbox_notifier, principal.tenant_id, read_by_user)
        return sum(len(read) for read in read_by_user.values())


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
