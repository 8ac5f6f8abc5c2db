"""The in-app inbox: MarkAsRead and GetUnreadCount."""

from __future__ import annotations

from collections.abc import Sequence

from application.ports.clock import Clock
from application.ports.repositories import UnitOfWorkFactory
from application.principal import Principal
from application.use_cases.id_lists import distinct_ids, load_all
from domain.errors import ValidationFailed


class MarkAsRead:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow = uow
        self._clock = clock

    async def execute(self, principal: Principal, ids: Sequence[str]) -> int:
        """All or nothing: an unknown id leaves every notification as it was."""
        unique = distinct_ids(ids)
        now = self._clock.now()
        async with self._uow() as uow:
            found = await load_all(uow.notifications, principal.tenant_id, unique)
            marked = 0
            for n in found:
                if n.mark_read(now):
                    marked += 1
                    await uow.notifications.save(n)
            await uow.commit()
        return marked


class GetUnreadCount:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def execute(self, principal: Principal, user_id: str) -> int:
        if not user_id.strip():
            raise ValidationFailed.single("user_id", "required")
        async with self._uow() as uow:
            return await uow.notifications.count_unread(principal.tenant_id, user_id)
