"""Calls that act on a list of notification ids, all of them or none."""

from __future__ import annotations

from collections.abc import Sequence

from application.ports.repositories import NotificationRepository
from domain.errors import NotFound, ValidationFailed
from domain.notification import Notification

MAX_IDS_PER_CALL = 1000


def distinct_ids(ids: Sequence[str]) -> list[str]:
    """The ids in request order without repeats; refuses an empty, oversized or blank list."""
    if not ids:
        raise ValidationFailed.single("ids", "at least one id is required")
    if len(ids) > MAX_IDS_PER_CALL:
        raise ValidationFailed.single("ids", f"at most {MAX_IDS_PER_CALL} ids per call")
    for i, value in enumerate(ids):
        if not value.strip():
            raise ValidationFailed.single(f"ids[{i}]", "must not be empty")
    return list(dict.fromkeys(ids))


async def load_all(
    notifications: NotificationRepository, tenant_id: str, ids: Sequence[str]
) -> list[Notification]:
    """The tenant's notifications for ``ids`` (locked), in that order; NotFound if any is missing,
    so the caller changes nothing."""
    found = {n.id: n for n in await notifications.get_many(tenant_id, ids, for_update=True)}
    for value in ids:
        if value not in found:
            raise NotFound("notification", value)
    return [found[value] for value in ids]
