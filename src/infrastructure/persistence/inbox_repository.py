"""The in-app inbox's per-user change log.

Each append first bumps the user's ``inbox_heads`` row (INSERT ... ON CONFLICT DO UPDATE), which
row-locks it until the transaction ends: a second appender for the same user waits there, so
seqs commit in the order they were given and a reader of "seq > N" never sees N+2 before N+1.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from application.ports.repositories import InboxEvent, InboxEventKind
from infrastructure.persistence.notification_repository import SqlNotificationRepository
from infrastructure.persistence.tables import inbox_events as e
from infrastructure.persistence.tables import inbox_heads as h


def _event(row: sa.RowMapping) -> InboxEvent:
    return InboxEvent(
        seq=row["seq"],
        kind=InboxEventKind(row["kind"]),
        unread_count=row["unread_count"],
        created_at=row["created_at"],
        notification_id=row["notification_id"],
        read_ids=tuple(row["read_ids"]),
    )


class SqlInboxEventRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection
        self._notifications = SqlNotificationRepository(connection)

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
        bump = (
            insert(h)
            .values(tenant_id=tenant_id, user_id=user_id, last_seq=1)
            .on_conflict_do_update(
                index_elements=[h.c.tenant_id, h.c.user_id], set_={"last_seq": h.c.last_seq + 1}
            )
            .returning(h.c.last_seq)
        )
        seq = int((await self._conn.execute(bump)).scalar_one())
        # Counted after the head lock is ours: under READ COMMITTED the next statement takes a
        # fresh snapshot, so the count includes every earlier appender's commit.
        unread = await self._notifications.count_unread(tenant_id, user_id)
        row = (
            (
                await self._conn.execute(
                    insert(e)
                    .values(
                        tenant_id=tenant_id,
                        user_id=user_id,
                        seq=seq,
                        kind=kind.value,
                        notification_id=notification_id,
                        read_ids=list(read_ids),
                        unread_count=unread,
                        created_at=now,
                    )
                    .returning(e)
                )
            )
            .mappings()
            .one()
        )
        return _event(row)

    async def after(self, tenant_id: str, user_id: str, seq: int, limit: int) -> list[InboxEvent]:
        rows = (
            (
                await self._conn.execute(
                    sa.select(e)
                    .where(e.c.tenant_id == tenant_id, e.c.user_id == user_id, e.c.seq > seq)
                    .order_by(e.c.seq)
                    .limit(limit)
                )
            )
            .mappings()
            .all()
        )
        return [_event(r) for r in rows]

    async def head(self, tenant_id: str, user_id: str) -> tuple[int, int]:
        oldest = (
            sa.select(sa.func.min(e.c.seq))
            .where(e.c.tenant_id == h.c.tenant_id, e.c.user_id == h.c.user_id)
            .scalar_subquery()
        )
        row = (
            await self._conn.execute(
                sa.select(h.c.last_seq, oldest).where(
                    h.c.tenant_id == tenant_id, h.c.user_id == user_id
                )
            )
        ).first()
        if row is None:
            return (0, 0)
        last, first = int(row[0]), row[1]
        # prune keeps each user's latest event, so "nothing kept" only follows a manual delete:
        # then nothing at or below last can be served.
        return (last, int(first) if first is not None else last + 1)

    async def prune(self, before: datetime, limit: int) -> int:
        doomed = (
            sa.select(e.c.tenant_id, e.c.user_id, e.c.seq)
            .join(h, sa.and_(h.c.tenant_id == e.c.tenant_id, h.c.user_id == e.c.user_id))
            .where(e.c.created_at < before, e.c.seq < h.c.last_seq)
            .limit(limit)
            # Concurrent pruners (one per worker) take disjoint rows instead of waiting or
            # deadlocking; only events are locked, never a head an appender needs.
            .with_for_update(of=e, skip_locked=True)
        )
        result = await self._conn.execute(
            sa.delete(e).where(sa.tuple_(e.c.tenant_id, e.c.user_id, e.c.seq).in_(doomed))
        )
        return int(result.rowcount)
