"""GetNotification and CancelNotification."""

from __future__ import annotations

from application.ports.clock import Clock
from application.ports.repositories import UnitOfWorkFactory
from application.ports.scheduler import Scheduler
from application.principal import Principal
from domain.errors import ValidationFailed
from domain.notification import Notification


def _check_id(notification_id: str) -> None:
    if not notification_id.strip():
        raise ValidationFailed.single("id", "required")


class GetNotification:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def execute(self, principal: Principal, notification_id: str) -> Notification:
        _check_id(notification_id)
        async with self._uow() as uow:
            return await uow.notifications.get(principal.tenant_id, notification_id)


class CancelNotification:
    def __init__(self, uow: UnitOfWorkFactory, scheduler: Scheduler, clock: Clock) -> None:
        self._uow = uow
        self._scheduler = scheduler
        self._clock = clock

    async def execute(self, principal: Principal, notification_id: str) -> Notification:
        _check_id(notification_id)
        now = self._clock.now()
        async with self._uow() as uow:
            n = await uow.notifications.get(principal.tenant_id, notification_id)
            n.cancel(now)
            await uow.notifications.save(n)
            await uow.commit()
        # The record is what counts: a worker that still claims it sees CANCELLED and drops it.
        await self._scheduler.remove(n.id)
        return n
