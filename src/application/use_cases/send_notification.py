"""SendNotification: accept one notification, persist it, queue it."""

from __future__ import annotations

from dataclasses import dataclass

from application.errors import IdempotencyConflict
from application.ports.clock import Clock
from application.ports.repositories import UnitOfWorkFactory
from application.ports.scheduler import QueueItem, Scheduler
from application.principal import Principal
from application.use_cases.commands import SendNotificationCommand
from application.use_cases.preparation import NotificationPreparer
from domain.notification import Notification, Status


@dataclass(frozen=True, slots=True)
class SendOutcome:
    notification: Notification
    replayed: bool


def queue_item(n: Notification) -> QueueItem:
    return QueueItem(n.id, n.priority, n.due_at)


class SendNotification:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        scheduler: Scheduler,
        preparer: NotificationPreparer,
        clock: Clock,
    ) -> None:
        self._uow = uow
        self._scheduler = scheduler
        self._preparer = preparer
        self._clock = clock

    async def execute(self, principal: Principal, command: SendNotificationCommand) -> SendOutcome:
        now = self._clock.now()
        notification = await self._preparer.prepare(command, principal, now)
        async with self._uow() as uow:
            if not await uow.notifications.add(notification):
                existing = await uow.notifications.get_by_request_id(
                    principal.tenant_id, command.request_id
                )
                assert existing is not None, "insert conflicted but no row holds the request_id"
                if existing.request_fingerprint != notification.request_fingerprint:
                    raise IdempotencyConflict(command.request_id, existing.id)
                notification, replayed = existing, True
            else:
                replayed = False
                await uow.commit()
        # Enqueueing after the commit: if it fails the caller gets UNAVAILABLE, and its retry
        # (a replay) enqueues again; the reconciler covers a caller that never retries.
        if notification.status is Status.QUEUED:
            await self._scheduler.enqueue([queue_item(notification)], now)
        return SendOutcome(notification, replayed)
