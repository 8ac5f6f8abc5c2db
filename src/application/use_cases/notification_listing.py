"""ListNotifications: the tenant's notifications, filtered, newest first, a page at a time."""

from __future__ import annotations

from application.ports.notification_queries import NotificationQuery
from application.ports.repositories import PageCursor, UnitOfWorkFactory
from application.principal import Principal
from application.use_cases import paging
from domain.errors import ValidationFailed
from domain.notification import Notification

DEFAULT_PAGE_SIZE = 100


def _filters(query: NotificationQuery) -> dict[str, object]:
    """The filters a page token is bound to; the statuses as a set (their order means nothing)."""
    return {
        "user_id": query.user_id,
        "statuses": sorted(s.value for s in query.statuses),
        "channel": query.channel.value if query.channel is not None else None,
        "category": query.category,
        "priority": int(query.priority) if query.priority is not None else None,
        "caller_service": query.caller_service,
        "created_from": query.created_from.isoformat() if query.created_from else None,
        "created_before": query.created_before.isoformat() if query.created_before else None,
    }


class ListNotifications:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def execute(
        self, principal: Principal, query: NotificationQuery, page_size: int, page_token: str
    ) -> tuple[list[Notification], str]:
        size = paging.page_size(page_size, DEFAULT_PAGE_SIZE)
        if (
            query.created_from is not None
            and query.created_before is not None
            and query.created_before <= query.created_from
        ):
            raise ValidationFailed.single("end_time", "must be after start_time")
        filters = _filters(query)
        after = paging.decode_cursor(page_token, filters)
        async with self._uow() as uow:
            # One extra row tells whether another page follows.
            found = await uow.notifications.list_page(principal.tenant_id, query, size + 1, after)
        return paging.cursor_page(found, size, lambda n: PageCursor(n.created_at, n.id), filters)
