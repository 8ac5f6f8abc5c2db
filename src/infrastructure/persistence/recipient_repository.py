"""Recipients in Postgres (SQLAlchemy Core); one row per recipient, compare-and-set on version."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from application.errors import ConcurrentUpdate
from domain.recipient import Recipient
from infrastructure.persistence.recipient_rows import from_row, to_row
from infrastructure.persistence.row_batches import any_of
from infrastructure.persistence.tables import recipients as t

_IMMUTABLE = frozenset({"tenant_id", "user_id", "created_at"})


# Built once: these run for every send.
_ONE = sa.select(t).where(
    t.c.tenant_id == sa.bindparam("tenant_id"), t.c.user_id == sa.bindparam("user_id")
)
_MANY = sa.select(t).where(t.c.tenant_id == sa.bindparam("tenant_id"), any_of(t.c.user_id, "ids"))


class SqlRecipientRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def get(self, tenant_id: str, user_id: str) -> Recipient | None:
        row = (
            (await self._conn.execute(_ONE, {"tenant_id": tenant_id, "user_id": user_id}))
            .mappings()
            .first()
        )
        return from_row(row) if row is not None else None

    async def get_many(self, tenant_id: str, user_ids: Sequence[str]) -> dict[str, Recipient]:
        if not user_ids:
            return {}
        rows = (
            (await self._conn.execute(_MANY, {"tenant_id": tenant_id, "ids": list(set(user_ids))}))
            .mappings()
            .all()
        )
        return {r["user_id"]: from_row(r) for r in rows}

    async def save(self, recipient: Recipient) -> None:
        values = to_row(recipient)
        if recipient.version == 0:
            # Two first upserts of one user race here; the loser retries and then updates.
            inserted = (
                insert(t)
                .values(values | {"version": 1})
                .on_conflict_do_nothing(index_elements=[t.c.tenant_id, t.c.user_id])
                .returning(t.c.version)
            )
            written = (await self._conn.execute(inserted)).scalar_one_or_none()
        else:
            updated = (
                sa.update(t)
                .where(
                    t.c.tenant_id == recipient.tenant_id,
                    t.c.user_id == recipient.user_id,
                    t.c.version == recipient.version,
                )
                .values(
                    {k: v for k, v in values.items() if k not in _IMMUTABLE}
                    | {"version": t.c.version + 1}
                )
                .returning(t.c.version)
            )
            written = (await self._conn.execute(updated)).scalar_one_or_none()
        if written is None:
            raise ConcurrentUpdate("recipient", recipient.user_id)
        recipient.version = written

    async def delete(self, tenant_id: str, user_id: str) -> bool:
        result = await self._conn.execute(
            sa.delete(t).where(t.c.tenant_id == tenant_id, t.c.user_id == user_id)
        )
        return bool(result.rowcount)
