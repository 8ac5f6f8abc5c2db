"""Categories in Postgres (SQLAlchemy Core)."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy import RowMapping
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.policy import CapAction, Category, CategoryKind, Limits
from infrastructure.persistence.tables import categories as t


def _from_row(row: RowMapping) -> Category:
    window = row["dedup_window_seconds"]
    return Category(
        name=row["name"],
        kind=CategoryKind(row["kind"]),
        limits=Limits(row["per_hour_cap"], row["per_day_cap"]),
        cap_action=CapAction(row["cap_action"]),
        dedup_window=timedelta(seconds=window) if window is not None else None,
        updated_at=row["updated_at"],
    )


# Built once: it runs for every send.
_ONE = sa.select(t).where(
    t.c.tenant_id == sa.bindparam("tenant_id"), t.c.name == sa.bindparam("name")
)


class SqlCategoryRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def get(self, tenant_id: str, name: str) -> Category | None:
        row = (
            (await self._conn.execute(_ONE, {"tenant_id": tenant_id, "name": name}))
            .mappings()
            .first()
        )
        return _from_row(row) if row is not None else None

    async def put(self, tenant_id: str, category: Category) -> None:
        if category.updated_at is None:
            raise ValueError("a stored category needs updated_at")
        values = {
            "kind": category.kind.value,
            "per_hour_cap": category.limits.per_hour,
            "per_day_cap": category.limits.per_day,
            "cap_action": category.cap_action.value,
            "dedup_window_seconds": (
                int(category.dedup_window.total_seconds())
                if category.dedup_window is not None
                else None
            ),
            "updated_at": category.updated_at,
        }
        await self._conn.execute(
            insert(t)
            .values(tenant_id=tenant_id, name=category.name, **values)
            .on_conflict_do_update(index_elements=[t.c.tenant_id, t.c.name], set_=values)
        )

    async def list(self, tenant_id: str, after_name: str, limit: int) -> list[Category]:
        rows = (
            (
                await self._conn.execute(
                    sa.select(t)
                    .where(t.c.tenant_id == tenant_id, t.c.name > after_name)
                    .order_by(t.c.name)
                    .limit(limit)
                )
            )
            .mappings()
            .all()
        )
        return [_from_row(r) for r in rows]
