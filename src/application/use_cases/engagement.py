"""TrackEngagement: what the recipient did with a notification (receipt, open, click...)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from application.errors import ConcurrentUpdate
from application.ports.clock import Clock
from application.ports.inbox_notifier import InboxNotifier
from application.ports.repositories import UnitOfWorkFactory
from application.principal import Principal
from application.retries import rerun_on
from application.use_cases.inbox import log_reads, wake_inboxes
from domain.errors import Violations
from domain.notification import REPORT_CLOCK_SKEW, EngagementAction, Notification

# Receipts for one notification arrive together (an open and a click): a lost race is retried.
ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Tracked:
    notification: Notification
    # False when the action was already recorded: nothing changed.
    recorded: bool


class TrackEngagement:
    def __init__(
        self, uow: UnitOfWorkFactory, clock: Clock, inbox_notifier: InboxNotifier | None = None
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._inbox_notifier = inbox_notifier

    async def execute(
        self,
        principal: Principal,
        notification_id: str,
        action: EngagementAction | None,
        event_time: datetime | None,
    ) -> Tracked:
        now = self._clock.now()
        v = Violations()
        if not notification_id.strip():
            v.add("id", "required")
        if action is None:
            v.add("action", "required: one of DELIVERED, OPENED, CLICKED, DISMISSED")
        # The aggregate refuses a time before it was created, with the same tolerance.
        if event_time is not None and event_time > now + REPORT_CLOCK_SKEW:
            v.add("event_time", "is in the future")
        v.raise_if_any()
        assert action is not None  # raise_if_any() refused it otherwise
        return await rerun_on(
            ConcurrentUpdate,
            ATTEMPTS,
            lambda: self._track(principal, notification_id, action, event_time, now),
        )

    async def _track(
        self,
        principal: Principal,
        notification_id: str,
        action: EngagementAction,
        event_time: datetime | None,
        now: datetime,
    ) -> Tracked:
        async with self._uow() as uow:
            n = await uow.notifications.get(principal.tenant_id, notification_id)
            was_unread = n.unread
            recorded = n.engage(action, event_time or now, now)
            if not recorded:
                return Tracked(n, False)
            await uow.notifications.save(n)
            # Read through an open or click: the inbox sees it as MarkAsRead would.
            read = {n.user_id: [n.id]} if was_unread and not n.unread else {}
            await log_reads(uow, n.tenant_id, read, now)
            await uow.commit()
        await wake_inboxes(self._inbox_notifier, n.tenant_id, read)
        return Tracked(n, True)
