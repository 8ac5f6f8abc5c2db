"""The in-app inbox: MarkAsRead and GetUnreadCount."""

from __future__ import annotations

from collections.abc import Sequence

from application.ports.clock import Clock
from application.ports.repositories import UnitOfWorkFactory
from application.principal import Principal
from domain.errors import NotFound, ValidationFailed

MAX_IDS_PER_CALL = 1000


class MarkAsRead:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow = uow
        self._clock = clock

    async def execute(self, principal: Principal, ids: Sequence[str]) -> int:
        """All or nothing: an unknown id leaves every notification as it was."""
        if not ids:
            raise ValidationFailed.single("ids", "at least one id is required")
        if len(ids) > MAX_IDS_PER_CALL:
            raise ValidationFailed.single("ids", f"at most {MAX_IDS_PER_CALL} ids per call")
        for i, value in enumerate(ids):
            if not value.strip():
                raise ValidationFailed.single(f"ids[{i}]", "must not be empty")
        unique = list(dict.fromkeys(ids))
        now = self._clock.now()
        async with self._uow() as uow:
            found = await uow.notifications.get_many(principal.tenant_id, unique)
            known = {n.id for n in found}
            for value in unique:
                if value not in known:
                    raise NotFound("notification", value)
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
