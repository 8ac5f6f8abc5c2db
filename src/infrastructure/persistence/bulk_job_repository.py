"""Bulk jobs, their calls and their recipients in Postgres (SQLAlchemy Core)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from application.ports.repositories import BulkJobCall, BulkJobRecipientView
from domain.bulk_job import BulkJob, BulkJobProgress, BulkJobRecipient, BulkJobState, Refusal
from domain.notification import CANCELLABLE, UNSENT, Channel, Status
from infrastructure.persistence.row_batches import RowBatchInsert
from infrastructure.persistence.tables import bulk_job_calls as calls
from infrastructure.persistence.tables import bulk_job_recipients as job_recipients
from infrastructure.persistence.tables import bulk_jobs as jobs
from infrastructure.persistence.tables import notifications

_CANCELLABLE = tuple(s.value for s in CANCELLABLE)
# Unsent, but only a cancel request reaches them (nothing left to do once it is recorded).
_CANCEL_REQUESTABLE = tuple(s.value for s in UNSENT - CANCELLABLE)
# Each recipient with their notification, if it exists (refused recipients have none).
_WITH_NOTIFICATION = job_recipients.outerjoin(
    notifications,
    sa.and_(
        notifications.c.tenant_id == job_recipients.c.tenant_id,
        notifications.c.id == job_recipients.c.notification_id,
    ),
)


def _job(row: RowMapping) -> BulkJob:
    return BulkJob(
        id=row["job_id"],
        tenant_id=row["tenant_id"],
        caller=row["caller_service"],
        request_id=row["request_id"],
        request_fingerprint=row["request_fingerprint"],
        # Empty for jobs stored before jobs had a channel, all of whose recipients were refused.
        channel=Channel(row["channel"]) if row["channel"] else None,
        category=row["category"],
        recipient_count=row["recipient_count"],
        accepted_count=row["accepted_count"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        call_count=row["call_count"],
        state=BulkJobState(row["state"]),
        cancelled_at=row["cancelled_at"],
    )


def _mutable(job: BulkJob) -> dict[str, Any]:
    return {
        "channel": job.channel.value if job.channel is not None else "",
        "category": job.category,
        "state": job.state.value,
        "call_count": job.call_count,
        "recipient_count": job.recipient_count,
        "accepted_count": job.accepted_count,
        "updated_at": job.updated_at,
        "cancelled_at": job.cancelled_at,
    }


_INSERT_RECIPIENTS = RowBatchInsert(job_recipients)


def _recipient_row(tenant_id: str, job_id: str, r: BulkJobRecipient) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "job_id": job_id,
        "position": r.position,
        "request_id": r.request_id,
        "call_index": r.call_index,
        "user_id": r.user_id,
        "notification_id": r.notification_id,
        "deduplicated": r.deduplicated,
        "refusal_code": r.refusal.code if r.refusal is not None else None,
        "refusal_field": r.refusal.field if r.refusal is not None else None,
        "refusal_description": r.refusal.description if r.refusal is not None else None,
    }


def _recipient(row: RowMapping) -> BulkJobRecipient:
    refusal = None
    if row["refusal_code"] is not None:
        refusal = Refusal(row["refusal_code"], row["refusal_field"], row["refusal_description"])
    return BulkJobRecipient(
        position=row["position"],
        request_id=row["request_id"],
        call_index=row["call_index"],
        user_id=row["user_id"],
        notification_id=row["notification_id"],
        deduplicated=row["deduplicated"],
        refusal=refusal,
    )


class SqlBulkJobRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def get(self, tenant_id: str, job_id: str, *, for_update: bool = False) -> BulkJob | None:
        query = sa.select(jobs).where(jobs.c.tenant_id == tenant_id, jobs.c.job_id == job_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).mappings().first()
        return _job(row) if row is not None else None

    async def add(self, job: BulkJob) -> bool:
        stmt = (
            insert(jobs)
            .values(
                tenant_id=job.tenant_id,
                job_id=job.id,
                caller_service=job.caller,
                request_id=job.request_id,
                request_fingerprint=job.request_fingerprint,
                created_at=job.created_at,
                **_mutable(job),
            )
            # Either key: the job id, or the request_id of the call that creates it.
            .on_conflict_do_nothing()
            .returning(jobs.c.job_id)
        )
        return (await self._conn.execute(stmt)).scalar_one_or_none() is not None

    async def save(self, job: BulkJob) -> None:
        await self._conn.execute(
            sa.update(jobs)
            .where(jobs.c.tenant_id == job.tenant_id, jobs.c.job_id == job.id)
            .values(**_mutable(job))
        )

    async def get_call(self, tenant_id: str, request_id: str) -> BulkJobCall | None:
        row = (
            (
                await self._conn.execute(
                    sa.select(calls).where(
                        calls.c.tenant_id == tenant_id, calls.c.request_id == request_id
                    )
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        return BulkJobCall(
            tenant_id=row["tenant_id"],
            request_id=row["request_id"],
            job_id=row["job_id"],
            request_fingerprint=row["request_fingerprint"],
            first_position=row["first_position"],
            count=row["recipient_count"],
            created_at=row["created_at"],
        )

    async def add_call(self, call: BulkJobCall) -> bool:
        stmt = (
            insert(calls)
            .values(
                tenant_id=call.tenant_id,
                request_id=call.request_id,
                job_id=call.job_id,
                request_fingerprint=call.request_fingerprint,
                first_position=call.first_position,
                recipient_count=call.count,
                created_at=call.created_at,
            )
            .on_conflict_do_nothing(index_elements=[calls.c.tenant_id, calls.c.request_id])
            .returning(calls.c.request_id)
        )
        return (await self._conn.execute(stmt)).scalar_one_or_none() is not None

    async def add_recipients(
        self, tenant_id: str, job_id: str, recipients: Sequence[BulkJobRecipient]
    ) -> None:
        if not recipients:
            return
        await _INSERT_RECIPIENTS.execute(
            self._conn, [_recipient_row(tenant_id, job_id, r) for r in recipients]
        )

    async def recipients(
        self, tenant_id: str, job_id: str, after_position: int, limit: int
    ) -> list[BulkJobRecipientView]:
        query = (
            sa.select(job_recipients, notifications.c.status, notifications.c.status_reason)
            .select_from(_WITH_NOTIFICATION)
            .where(
                job_recipients.c.tenant_id == tenant_id,
                job_recipients.c.job_id == job_id,
                job_recipients.c.position > after_position,
            )
            .order_by(job_recipients.c.position)
            .limit(limit)
        )
        rows = (await self._conn.execute(query)).mappings().all()
        return [
            BulkJobRecipientView(
                _recipient(row),
                Status(row["status"]) if row["status"] is not None else None,
                row["status_reason"] or "",
            )
            for row in rows
        ]

    async def progress(self, tenant_id: str, job_id: str) -> BulkJobProgress:
        query = (
            sa.select(notifications.c.status, sa.func.count())
            .select_from(_WITH_NOTIFICATION)
            .where(job_recipients.c.tenant_id == tenant_id, job_recipients.c.job_id == job_id)
            .group_by(notifications.c.status)
        )
        statuses: dict[Status, int] = {}
        refused = 0
        for status, count in (await self._conn.execute(query)).all():
            if status is None:
                refused = count
            else:
                statuses[Status(status)] = count
        return BulkJobProgress.of(statuses, refused)

    async def unsent_notification_ids(
        self, tenant_id: str, job_id: str, after_id: str, limit: int
    ) -> list[str]:
        query = (
            sa.select(notifications.c.id)
            .where(
                notifications.c.tenant_id == tenant_id,
                notifications.c.bulk_job_id == job_id,
                sa.or_(
                    notifications.c.status.in_(_CANCELLABLE),
                    sa.and_(
                        notifications.c.status.in_(_CANCEL_REQUESTABLE),
                        notifications.c.cancel_requested_at.is_(None),
                    ),
                ),
                notifications.c.id > after_id,
            )
            .order_by(notifications.c.id)
            .limit(limit)
        )
        return list((await self._conn.execute(query)).scalars().all())
