"""Templates and their versions in Postgres (SQLAlchemy Core)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from application.errors import ConcurrentUpdate
from domain.template import Template, TemplateVersion
from infrastructure.persistence.tables import template_versions as v
from infrastructure.persistence.tables import templates as t
from infrastructure.persistence.template_rows import (
    template_from_row,
    template_to_row,
    version_from_row,
    version_to_row,
)


class SqlTemplateRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def get(self, tenant_id: str, name: str, *, for_update: bool = False) -> Template | None:
        stmt = sa.select(t).where(t.c.tenant_id == tenant_id, t.c.name == name)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self._conn.execute(stmt)).mappings().first()
        return template_from_row(row) if row is not None else None

    async def get_version(self, tenant_id: str, name: str, version: int) -> TemplateVersion | None:
        row = (
            (
                await self._conn.execute(
                    sa.select(v).where(
                        v.c.tenant_id == tenant_id, v.c.name == name, v.c.version == version
                    )
                )
            )
            .mappings()
            .first()
        )
        return version_from_row(row) if row is not None else None

    async def get_active(
        self, tenant_id: str, name: str
    ) -> tuple[Template, TemplateVersion | None] | None:
        # One round trip on the send path: the template row with its active version, if any.
        joined = t.outerjoin(
            v,
            sa.and_(
                v.c.tenant_id == t.c.tenant_id,
                v.c.name == t.c.name,
                v.c.version == t.c.active_version,
            ),
        )
        stmt = (
            sa.select(
                t,
                v.c.version,
                v.c.state,
                v.c.variables,
                v.c.contents,
                v.c.created_at.label("v_created_at"),
                v.c.created_by,
            )
            .select_from(joined)
            .where(t.c.tenant_id == tenant_id, t.c.name == name)
        )
        row = (await self._conn.execute(stmt)).mappings().first()
        if row is None:
            return None
        template = template_from_row(row)
        if row["version"] is None:
            return template, None
        version = version_from_row({**row, "created_at": row["v_created_at"]})
        return template, version

    async def list(self, tenant_id: str, after_name: str, limit: int) -> list[Template]:
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
        return [template_from_row(r) for r in rows]

    async def add(self, template: Template) -> bool:
        stmt = (
            insert(t)
            .values(template_to_row(template) | {"row_version": 1})
            .on_conflict_do_nothing(index_elements=[t.c.tenant_id, t.c.name])
            .returning(t.c.name)
        )
        if (await self._conn.execute(stmt)).scalar_one_or_none() is None:
            return False
        await self._write_versions(template)
        template.row_version = 1
        template.mark_saved()
        return True

    async def save(self, template: Template) -> None:
        row = template_to_row(template)
        for key in ("tenant_id", "name", "created_at"):
            row.pop(key)
        result = await self._conn.execute(
            sa.update(t)
            .where(
                t.c.tenant_id == template.tenant_id,
                t.c.name == template.name,
                t.c.row_version == template.row_version,
            )
            .values(row | {"row_version": t.c.row_version + 1})
        )
        if result.rowcount != 1:
            raise ConcurrentUpdate("template", template.name)
        await self._write_versions(template)
        template.row_version += 1
        template.mark_saved()

    async def _write_versions(self, template: Template) -> None:
        new = template.pending_versions()
        if new:
            await self._conn.execute(
                sa.insert(v), [version_to_row(template.tenant_id, x) for x in new]
            )
        for number, state in template.pending_state_changes().items():
            await self._conn.execute(
                sa.update(v)
                .where(
                    v.c.tenant_id == template.tenant_id,
                    v.c.name == template.name,
                    v.c.version == number,
                )
                .values(state=state.value)
            )
