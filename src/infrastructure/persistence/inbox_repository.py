"""The in-app inbox's per-user change log (being written: see issue 4's inbox work)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from application.ports.repositories import InboxEvent, InboxEventKind


class SqlInboxEventRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def append(
        self,
        tenant_id: str,
        user_id: str,
        kind: InboxEventKind,
        now: datetime,
        *,
        notification_id: str = "",
        read_ids: Sequence[str] = (),
    ) -> InboxEvent:
        raise NotImplementedError

    async def after(self, tenant_id: str, user_id: str, seq: int, limit: int) -> list[InboxEvent]:
        raise NotImplementedError

    async def head(self, tenant_id: str, user_id: str) -> tuple[int, int]:
        raise NotImplementedError
