"""Migration 0005 gives notifications already tried their provider (the last one to try them on
their channel) and those already sent their send time (from the accepting attempt), so
statistics cover them; it gives bulk jobs made before it their recipients (those that got a
notification); and every row reads back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command

from application.principal import Principal
from application.use_cases.bulk_jobs import GetBulkJob, ListBulkJobRecipients
from domain.bulk_job import BulkJobState
from domain.notification import (
    Address,
    Channel,
    Content,
    DeliveryResult,
    ErrorClass,
    NewNotification,
    Notification,
    Priority,
    RetryPolicy,
    Route,
    Status,
)
from infrastructure.embedded import EmbeddedPostgres
from infrastructure.persistence.engine import create_engine, json_dumps
from infrastructure.persistence.migrations_runner import alembic_config, upgrade_to_head
from infrastructure.persistence.notification_rows import to_row
from infrastructure.persistence.tables import notifications
from infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

pytestmark = pytest.mark.integration

T0 = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
NEW_COLUMNS = ("engagements", "provider", "sent_at", "cancel_requested_at")
# A bulk job as 0004 stored it: one call, its notifications' request_ids "<call>#<index>".
OLD_JOB = {
    "job_id": "job-old",
    "tenant_id": "acme",
    "caller_service": "marketing",
    "request_id": "call-9",
    "request_fingerprint": "fp-job",
    "recipient_count": 12,
    "accepted_count": 3,
    "created_at": T0,
}


def make(
    nid: str,
    *,
    request_id: str = "",
    user: str = "user-1",
    bulk_job_id: str | None = None,
    channel: Channel = Channel.IN_APP,
    fallbacks: tuple[Route, ...] = (),
) -> Notification:
    return Notification.accept(
        NewNotification(
            request_id=request_id or f"req-{nid}",
            user_id=user,
            channel=channel,
            priority=Priority.MEDIUM,
            category="mention",
            content=Content("t", "b"),
            address=Address("webhook_url", "https://hooks.example.com/in")
            if channel is Channel.WEBHOOK
            else None,
            fallbacks=fallbacks,
        ),
        id=nid,
        tenant_id="acme",
        caller="orders",
        fingerprint="fp",
        now=T0,
        bulk_job_id=bulk_job_id,
    )


def failure(n: Notification, at: datetime, provider: str, error_class: ErrorClass) -> None:
    n.record_failure(
        at,
        provider=provider,
        error_class=error_class,
        message="no",
        policy=RetryPolicy(),
        random=lambda: 0.5,
    )


def old_rows() -> list[Notification]:
    read = make("read")
    read.begin_attempt(T0)
    read.record_failover(T0 + timedelta(seconds=1), provider="first", message="down")
    read.record_success(T0 + timedelta(seconds=2), DeliveryResult("inbox", "m-1", delivered=True))
    read.mark_read(T0 + timedelta(minutes=5))
    failed = make("failed")
    failed.begin_attempt(T0)
    failure(failed, T0 + timedelta(seconds=3), "inbox", ErrorClass.PERMANENT)
    retrying = make("retrying")
    retrying.begin_attempt(T0)
    failure(retrying, T0 + timedelta(seconds=4), "inbox-a", ErrorClass.TRANSIENT)
    # Failed on its webhook, now queued on the in-app channel: no provider tried it there.
    fell_back = make(
        "fell-back",
        channel=Channel.WEBHOOK,
        fallbacks=(Route(Channel.IN_APP, None, Content("t", "b")),),
    )
    fell_back.begin_attempt(T0)
    failure(fell_back, T0 + timedelta(seconds=5), "webhook", ErrorClass.PERMANENT)
    assert fell_back.channel is Channel.IN_APP
    # The job's recipients 0, 2 and 10 got notifications; 1 and 3-9, 11 were refused.
    bulk = [
        make(f"b{i}", request_id=f"call-9#{i}", user=f"user-{i}", bulk_job_id="job-old")
        for i in (0, 2, 10)
    ]
    bulk[0].begin_attempt(T0)
    bulk[0].record_success(T0 + timedelta(seconds=1), DeliveryResult("inbox", delivered=True))
    return [read, failed, retrying, fell_back, make("queued"), *bulk]


@pytest.fixture
async def migrated(embedded_postgres: EmbeddedPostgres) -> AsyncIterator[str]:
    """A fresh database at 0004 holding notifications, then upgraded to head."""
    name = f"recmig_{uuid.uuid4().hex[:12]}"
    admin = embedded_postgres.uri("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = embedded_postgres.sqlalchemy_url(name)
    try:
        await asyncio.to_thread(command.upgrade, alembic_config(url), "0004")
        # JSON as the service writes it: to_row leaves the times in its JSON to json_dumps.
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool, json_serializer=json_dumps)
        try:
            with engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "INSERT INTO bulk_jobs (job_id, tenant_id, caller_service, request_id,"
                        " request_fingerprint, recipient_count, accepted_count, created_at)"
                        " VALUES (:job_id, :tenant_id, :caller_service, :request_id,"
                        " :request_fingerprint, :recipient_count, :accepted_count, :created_at)"
                    ),
                    OLD_JOB,
                )
                for n in old_rows():
                    row = {k: v for k, v in to_row(n).items() if k not in NEW_COLUMNS}
                    conn.execute(sa.insert(notifications).values(row | {"version": 1}))
        finally:
            engine.dispose()
        await asyncio.to_thread(upgrade_to_head, url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_tried_notifications_get_their_provider_and_sent_ones_their_send_time(
    migrated: str,
) -> None:
    engine = create_engine(migrated, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = {
                r.id: (r.provider, r.sent_at, r.engagements)
                for r in await conn.execute(
                    sa.select(
                        notifications.c.id,
                        notifications.c.provider,
                        notifications.c.sent_at,
                        notifications.c.engagements,
                    )
                )
            }
        assert rows == {
            # The accepting attempt's, not the provider that failed over before it.
            "read": ("inbox", T0 + timedelta(seconds=2), {}),
            # The provider that failed it, for good or for now.
            "failed": ("inbox", None, {}),
            "retrying": ("inbox-a", None, {}),
            "fell-back": (None, None, {}),
            "queued": (None, None, {}),
            "b0": ("inbox", T0 + timedelta(seconds=1), {}),
            "b2": (None, None, {}),
            "b10": (None, None, {}),
        }
        # What the application writes today agrees with the backfill.
        assert {n.id: n.last_provider or None for n in old_rows()} == {
            nid: provider for nid, (provider, _, _) in rows.items()
        }
        async with SqlUnitOfWorkFactory(engine)() as u:
            read = await u.notifications.get("acme", "read")
        assert read.engagements == {}
        assert read.accepted_attempt is not None
        assert read.accepted_attempt.provider == "inbox"
    finally:
        await engine.dispose()


async def test_an_earlier_bulk_job_gets_a_recipient_per_notification(migrated: str) -> None:
    engine = create_engine(migrated, pool_size=1)
    try:
        uow = SqlUnitOfWorkFactory(engine)
        who = Principal("acme", "marketing")
        page, token = await ListBulkJobRecipients(uow).execute(who, "job-old", 100, "")
        assert token == ""
        assert [
            (
                v.recipient.position,
                v.recipient.call_index,
                v.recipient.request_id,
                v.recipient.user_id,
                v.recipient.notification_id,
                v.recipient.deduplicated,
                v.recipient.refusal,
                v.status,
            )
            for v in page
        ] == [
            (0, 0, "call-9", "user-0", "b0", False, None, Status.DELIVERED),
            (2, 2, "call-9", "user-2", "b2", False, None, Status.QUEUED),
            (10, 10, "call-9", "user-10", "b10", False, None, Status.QUEUED),
        ]
        report = await GetBulkJob(uow).execute(who, "job-old")
        p = report.progress
        assert (p.accepted, p.delivered, p.queued, p.refused) == (3, 1, 2, 0)
        assert report.state is BulkJobState.RUNNING
        assert (report.job.recipient_count, report.job.accepted_count) == (12, 3)
        assert (report.job.channel, report.job.category) == (Channel.IN_APP, "mention")
        async with engine.connect() as conn:
            calls = (await conn.execute(sa.text("SELECT count(*) FROM bulk_job_calls"))).scalar()
        assert calls == 1
    finally:
        await engine.dispose()
