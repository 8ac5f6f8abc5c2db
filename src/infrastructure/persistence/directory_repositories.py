"""Tenants and API keys in Postgres."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from application.ports.repositories import ApiKeyRecord, Tenant
from infrastructure.persistence.tables import api_keys, tenants


class SqlTenantRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def get(self, tenant_id: str, *, for_update: bool = False) -> Tenant | None:
        query = sa.select(tenants).where(tenants.c.tenant_id == tenant_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).mappings().first()
        if row is None:
            return None
        return Tenant(
            row["tenant_id"],
            row["webhook_secret"],
            previous_webhook_secret=row["previous_webhook_secret"] or "",
            previous_secret_expires_at=row["previous_secret_expires_at"],
        )

    async def add(self, tenant: Tenant, now: datetime) -> None:
        await self._conn.execute(
            insert(tenants)
            .values(
                tenant_id=tenant.tenant_id, webhook_secret=tenant.webhook_secret, created_at=now
            )
            .on_conflict_do_nothing()
        )

    async def save_secrets(self, tenant: Tenant) -> None:
        await self._conn.execute(
            sa.update(tenants)
            .where(tenants.c.tenant_id == tenant.tenant_id)
            .values(
                webhook_secret=tenant.webhook_secret,
                previous_webhook_secret=tenant.previous_webhook_secret or None,
                previous_secret_expires_at=tenant.previous_secret_expires_at,
            )
        )


class SqlApiKeyRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def find_by_hash(self, key_hash: bytes) -> ApiKeyRecord | None:
        row = (
            (await self._conn.execute(sa.select(api_keys).where(api_keys.c.key_hash == key_hash)))
            .mappings()
            .first()
        )
        if row is None:
            return None
        return ApiKeyRecord(
            key_id=row["key_id"],
            tenant_id=row["tenant_id"],
            service=row["service"],
            revoked=row["revoked_at"] is not None,
        )

    async def add(self, record: ApiKeyRecord, key_hash: bytes, now: datetime) -> None:
        await self._conn.execute(
            sa.insert(api_keys).values(
                key_id=record.key_id,
                tenant_id=record.tenant_id,
                service=record.service,
                key_hash=key_hash,
                created_at=now,
                revoked_at=now if record.revoked else None,
            )
        )
