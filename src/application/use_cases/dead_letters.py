"""ListDeadLetters and ReplayDeadLetters: FAILED notifications, and sending them again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from application.ports.clock import Clock
from application.ports.repositories import DeadLetterQuery, PageCursor, UnitOfWorkFactory
from application.ports.scheduler import Scheduler
from application.principal import Principal
from application.use_cases import paging
from application.use_cases.id_lists import distinct_ids, load_all
from application.use_cases.send_notification import queue_item
from domain.errors import ValidationFailed
from domain.notification import Notification

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def _filters(query: DeadLetterQuery) -> dict[str, object]:
    return asdict(query)


class ListDeadLetters:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def execute(
        self, principal: Principal, query: DeadLetterQuery, page_size: int, page_token: str
    ) -> tuple[list[Notification], str]:
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise ValidationFailed.single("page_size", f"must be 0 to {MAX_PAGE_SIZE}")
        if (
            query.failed_from is not None
            and query.failed_before is not None
            and query.failed_before <= query.failed_from
        ):
            raise ValidationFailed.single("end_time", "must be after start_time")
        size = page_size or DEFAULT_PAGE_SIZE
        filters = _filters(query)
        after = paging.decode_cursor(page_token, filters)
        async with self._uow() as uow:
            # One extra row tells whether another page follows.
            found = await uow.notifications.list_failed(principal.tenant_id, query, size + 1, after)
        return paging.cursor_page(found, size, lambda n: PageCursor(n.updated_at, n.id), filters)


class ReplayDeadLetters:
    def __init__(self, uow: UnitOfWorkFactory, scheduler: Scheduler, clock: Clock) -> None:
        self._uow = uow
        self._scheduler = scheduler
        self._clock = clock

    async def execute(self, principal: Principal, ids: Sequence[str]) -> list[Notification]:
        """All or nothing: an unknown id or one that is not FAILED changes nothing."""
        unique = distinct_ids(ids)
        now = self._clock.now()
        async with self._uow() as uow:
            replayed = await load_all(uow.notifications, principal.tenant_id, unique)
            for n in replayed:
                n.replay(now)
                await uow.notifications.save(n)
            await uow.commit()
        await self._scheduler.enqueue([queue_item(n) for n in replayed], now)
        return replayed
