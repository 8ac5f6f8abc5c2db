"""Tenants, API keys, templates and bulk jobs in Postgres."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from application.ports.repositories import ApiKeyRecord, TemplateVersion, Tenant
from domain.bulk_job import BulkJob
from infrastructure.persistence.tables import TS, api_keys, bulk_jobs, templates, tenants


class SqlTenantRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def get(self, tenant_id: str) -> Tenant | None:
        row = (
            (await self._conn.execute(sa.select(tenants).where(tenants.c.tenant_id == tenant_id)))
            .mappings()
            .first()
        )
        return Tenant(row["tenant_id"], row["webhook_secret"]) if row else None

    async def add(self, tenant: Tenant, now: datetime) -> None:
        await self._conn.execute(
            insert(tenants)
            .values(
                tenant_id=tenant.tenant_id, webhook_secret=tenant.webhook_secret, created_at=now
            )
            .on_conflict_do_nothing()
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


class SqlTemplateRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def latest(self, tenant_id: str, name: str) -> list[TemplateVersion]:
        newest = (
            sa.select(sa.func.max(templates.c.version))
            .where(templates.c.tenant_id == tenant_id, templates.c.name == name)
            .scalar_subquery()
        )
        rows = (
            (
                await self._conn.execute(
                    sa.select(templates)
                    .where(
                        templates.c.tenant_id == tenant_id,
                        templates.c.name == name,
                        templates.c.version == newest,
                    )
                    .order_by(templates.c.locale)
                )
            )
            .mappings()
            .all()
        )
        return [
            TemplateVersion(
                r["tenant_id"], r["name"], r["version"], r["locale"], r["title"], r["body"]
            )
            for r in rows
        ]

    async def put(self, template: TemplateVersion, now: datetime) -> TemplateVersion:
        # Serialise concurrent puts of one template so version numbers do not collide.
        await self._conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
            {"k": f"template:{template.tenant_id}:{template.name}"},
        )
        current = (
            await self._conn.execute(
                sa.select(sa.func.coalesce(sa.func.max(templates.c.version), 0)).where(
                    templates.c.tenant_id == template.tenant_id, templates.c.name == template.name
                )
            )
        ).scalar_one()
        stored = TemplateVersion(
            template.tenant_id,
            template.name,
            int(current) + 1,
            template.locale,
            template.title,
            template.body,
        )
        # A version holds every locale: the other locales of the previous version carry over.
        carried = sa.select(
            templates.c.tenant_id,
            templates.c.name,
            sa.literal(stored.version),
            templates.c.locale,
            templates.c.title,
            templates.c.body,
            sa.literal(now, TS),
        ).where(
            templates.c.tenant_id == template.tenant_id,
            templates.c.name == template.name,
            templates.c.version == current,
            templates.c.locale != template.locale,
        )
        await self._conn.execute(
            sa.insert(templates).from_select(
                ["tenant_id", "name", "version", "locale", "title", "body", "created_at"], carried
            )
        )
        await self._conn.execute(
            sa.insert(templates).values(
                tenant_id=stored.tenant_id,
                name=stored.name,
                version=stored.version,
                locale=stored.locale,
                title=stored.title,
                body=stored.body,
                created_at=now,
            )
        )
        return stored


class SqlBulkJobRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def add(self, job: BulkJob) -> bool:
        stmt = (
            insert(bulk_jobs)
            .values(
                job_id=job.id,
                tenant_id=job.tenant_id,
                caller_service=job.caller,
                request_id=job.request_id,
                request_fingerprint=job.request_fingerprint,
                recipient_count=job.recipient_count,
                accepted_count=job.accepted_count,
                created_at=job.created_at,
            )
            .on_conflict_do_nothing(index_elements=[bulk_jobs.c.tenant_id, bulk_jobs.c.request_id])
            .returning(bulk_jobs.c.job_id)
        )
        return (await self._conn.execute(stmt)).scalar_one_or_none() is not None

    async def get_by_request_id(self, tenant_id: str, request_id: str) -> BulkJob | None:
        row = (
            (
                await self._conn.execute(
                    sa.select(bulk_jobs).where(
                        bulk_jobs.c.tenant_id == tenant_id, bulk_jobs.c.request_id == request_id
                    )
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        return BulkJob(
            id=row["job_id"],
            tenant_id=row["tenant_id"],
            caller=row["caller_service"],
            request_id=row["request_id"],
            request_fingerprint=row["request_fingerprint"],
            recipient_count=row["recipient_count"],
            accepted_count=row["accepted_count"],
            created_at=row["created_at"],
        )

    async def save(self, job: BulkJob) -> None:
        await self._conn.execute(
            sa.update(bulk_jobs)
            .where(bulk_jobs.c.job_id == job.id)
            .values(recipient_count=job.recipient_count, accepted_count=job.accepted_count)
        )
