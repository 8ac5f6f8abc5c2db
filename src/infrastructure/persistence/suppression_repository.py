"""Addresses that must not be sent to again, per tenant."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from application.ports.repositories import Suppression
from domain.notification import Address
from infrastructure.persistence.tables import address_suppressions as t


class SqlSuppressionRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def add(self, suppression: Suppression) -> None:
        await self._conn.execute(
            insert(t)
            .values(
                tenant_id=suppression.tenant_id,
                address_kind=suppression.address.kind,
                address_value=suppression.address.value,
                reason=suppression.reason,
                created_at=suppression.created_at,
            )
            .on_conflict_do_nothing()
        )

    async def find(self, tenant_id: str, address: Address) -> Suppression | None:
        row = (
            (
                await self._conn.execute(
                    sa.select(t).where(
                        t.c.tenant_id == tenant_id,
                        t.c.address_kind == address.kind,
                        t.c.address_value == address.value,
                    )
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        return Suppression(tenant_id, address, row["reason"], row["created_at"])
