"""Bulk jobs on the real, migrated Postgres (and Redis): the repository's rows and queries,
and BulkSend / CancelBulkJob where concurrency and SQL matter."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from application.errors import IdempotencyConflict
from application.ports.repositories import BulkJobCall
from application.principal import Principal
from application.use_cases.bulk_jobs import CancelBulkJob, GetBulkJob, ListBulkJobRecipients
from application.use_cases.bulk_send import BulkOutcome, BulkSend
from application.use_cases.commands import AddressInput, BulkRecipientInput, BulkSendCommand
from application.use_cases.preparation import NotificationPreparer
from domain.bulk_job import BulkJob, BulkJobRecipient, BulkJobState, Refusal
from domain.notification import (
    Channel,
    Content,
    DeliveryResult,
    NewNotification,
    Notification,
    Priority,
    Status,
)
from infrastructure.clock import SystemClock, UuidV7Generator
from infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from infrastructure.scheduling import RedisScheduler
from infrastructure.templates import JinjaTemplateEngine, JinjaTemplateRenderer

pytestmark = pytest.mark.integration

T0 = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)
ACME = Principal("acme", "marketing")


def a_job(job_id: str = "job-1", tenant: str = "acme", request_id: str = "call-1") -> BulkJob:
    return BulkJob.start(
        id=job_id,
        tenant_id=tenant,
        caller="marketing",
        request_id=request_id,
        request_fingerprint="fp",
        channel=Channel.IN_APP,
        category="promo",
        count=3,
        now=T0,
    )


def a_notification(nid: str, job_id: str = "job-1", tenant: str = "acme") -> Notification:
    return Notification.accept(
        NewNotification(
            request_id=f"call-1#{nid}",
            user_id=f"user-{nid}",
            channel=Channel.IN_APP,
            priority=Priority.MEDIUM,
            category="promo",
            content=Content("t", "b"),
        ),
        id=nid,
        tenant_id=tenant,
        caller="marketing",
        fingerprint="fp",
        now=T0,
        bulk_job_id=job_id,
    )


# -- the repository ---------------------------------------------------------------------------


async def test_jobs_are_named_per_tenant_and_round_trip(uow: SqlUnitOfWorkFactory) -> None:
    async with uow() as u:
        assert await u.bulk_jobs.add(a_job()) is True
        # The same id, or another job created by the same call: nothing written.
        assert await u.bulk_jobs.add(a_job(request_id="call-2")) is False
        assert await u.bulk_jobs.add(a_job("job-2")) is False
        # Another tenant's namespace.
        assert await u.bulk_jobs.add(a_job(tenant="globex")) is True
        await u.commit()

    async with uow() as u:
        job = await u.bulk_jobs.get("acme", "job-1", for_update=True)
        assert job == a_job()
        assert job is not None
        assert job.created_at.utcoffset() is not None
        assert await u.bulk_jobs.get("acme", "job-2") is None
        assert await u.bulk_jobs.get("initech", "job-1") is None
        assert job.extend(Channel.IN_APP, "promo", 5, T0 + timedelta(minutes=1)) == 3
        job.count_accepted(6)
        job.cancel(T0 + timedelta(minutes=2))
        await u.bulk_jobs.save(job)
        await u.commit()

    async with uow() as u:
        again = await u.bulk_jobs.get("acme", "job-1")
        theirs = await u.bulk_jobs.get("globex", "job-1")
    assert again == job
    assert theirs is not None
    assert (theirs.recipient_count, theirs.state) == (3, BulkJobState.RUNNING)


async def test_calls_are_recorded_once_per_request_id(uow: SqlUnitOfWorkFactory) -> None:
    call = BulkJobCall("acme", "call-1", "job-1", "fp", 0, 3, T0)
    async with uow() as u:
        assert await u.bulk_jobs.add_call(call) is True
        assert await u.bulk_jobs.add_call(BulkJobCall("acme", "call-1", "j2", "x", 3, 1, T0)) is (
            False
        )
        assert await u.bulk_jobs.add_call(BulkJobCall("globex", "call-1", "j", "x", 0, 1, T0))
        await u.commit()
    async with uow() as u:
        assert await u.bulk_jobs.get_call("acme", "call-1") == call
        assert await u.bulk_jobs.get_call("acme", "call-2") is None


async def test_recipients_list_with_their_notifications_status_and_count_up(
    uow: SqlUnitOfWorkFactory,
) -> None:
    queued, sent, mine_elsewhere = a_notification("n1"), a_notification("n2"), a_notification("n3")
    sent.begin_attempt(T0)
    sent.record_success(T0, DeliveryResult("inbox", delivered=True))
    foreign = a_notification("n4", tenant="globex")
    refusal = Refusal("INVALID_ARGUMENT", "recipients[1].address.email", "not an email")
    rows = [
        BulkJobRecipient(0, "call-1", 0, "user-n1", "n1"),
        BulkJobRecipient(1, "call-1", 1, "user-x", refusal=refusal),
        BulkJobRecipient(2, "call-1", 2, "user-n2", "n2"),
        BulkJobRecipient(3, "call-2", 0, "user-n1", "n1", deduplicated=True),
        # Another tenant's notification never joins (ids are unique; this guards the tenant).
        BulkJobRecipient(4, "call-2", 1, "user-n4", "n4"),
    ]
    async with uow() as u:
        await u.bulk_jobs.add(a_job())
        await u.notifications.add_many([queued, sent, mine_elsewhere, foreign])
        await u.bulk_jobs.add_recipients("acme", "job-1", rows)
        await u.commit()

    async with uow() as u:
        page = await u.bulk_jobs.recipients("acme", "job-1", -1, 3)
        rest = await u.bulk_jobs.recipients("acme", "job-1", 2, 10)
        progress = await u.bulk_jobs.progress("acme", "job-1")
        nothing = await u.bulk_jobs.progress("globex", "job-1")
    assert [v.recipient for v in page + rest] == rows
    assert [v.status for v in page + rest] == [
        Status.QUEUED,
        None,
        Status.DELIVERED,
        Status.QUEUED,
        None,
    ]
    assert page[2].status_reason == ""
    assert (progress.refused, progress.queued, progress.delivered, progress.accepted) == (
        2,
        2,
        1,
        3,
    )
    assert nothing.accepted + nothing.refused == 0


async def test_unsent_notification_ids_page_by_id_within_the_tenant_and_job(
    uow: SqlUnitOfWorkFactory,
) -> None:
    ns = [a_notification(f"n{i}") for i in range(7)]
    ns[1].begin_attempt(T0)
    ns[2].cancel(T0)
    ns[5].begin_attempt(T0)
    ns[5].record_success(T0, DeliveryResult("inbox"))
    # Being sent, its cancel already requested: nothing left for a sweep to do.
    ns[6].begin_attempt(T0)
    ns[6].request_cancel(T0)
    others = [a_notification("o1", job_id="job-2"), a_notification("o2", tenant="globex")]
    async with uow() as u:
        await u.notifications.add_many(ns + others)
        await u.commit()
    async with uow() as u:
        # Queued, and being sent (a cancel must reach it too).
        assert await u.bulk_jobs.unsent_notification_ids("acme", "job-1", "", 10) == [
            "n0",
            "n1",
            "n3",
            "n4",
        ]
        assert await u.bulk_jobs.unsent_notification_ids("acme", "job-1", "n1", 1) == ["n3"]


# -- BulkSend and CancelBulkJob on the real stores ------------------------------------------


def bulk_send(uow: SqlUnitOfWorkFactory, scheduler: RedisScheduler) -> BulkSend:
    ids = UuidV7Generator()
    preparer = NotificationPreparer(
        JinjaTemplateRenderer(uow, JinjaTemplateEngine()), ids, frozenset(Channel)
    )
    return BulkSend(uow, scheduler, preparer, SystemClock(), ids)


def command(request_id: str, users: range, job_id: str = "", **kw: object) -> BulkSendCommand:
    base: dict[str, object] = {
        "request_id": request_id,
        "job_id": job_id,
        "channel": Channel.EMAIL,
        "category": "promo",
        "content": Content("Sale", "Now"),
        "recipients": [
            BulkRecipientInput(
                f"{request_id}-u{i}",
                AddressInput("email", "bad" if i % 5 == 0 else f"u{i}@example.com"),
            )
            for i in users
        ],
    }
    base.update(kw)
    return BulkSendCommand(**base)  # type: ignore[arg-type]


async def positions(engine: AsyncEngine, job_id: str) -> list[tuple[int, str, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT position, request_id, call_index FROM bulk_job_recipients "
                "WHERE tenant_id = 'acme' AND job_id = :job ORDER BY position"
            ),
            {"job": job_id},
        )
        return [(r[0], r[1], r[2]) for r in rows]


async def test_concurrent_extensions_take_turns_and_get_distinct_positions(
    uow: SqlUnitOfWorkFactory, scheduler: RedisScheduler, clean_db: AsyncEngine
) -> None:
    send = bulk_send(uow, scheduler)
    # Ten calls at once, all naming a job that does not exist yet: one creates it.
    outcomes = await asyncio.gather(
        *(send.execute(ACME, command(f"call-{c}", range(30), job_id="jj")) for c in range(10))
    )
    starts = sorted(o.first_position for o in outcomes)
    assert starts == list(range(0, 300, 30))
    found = await positions(clean_db, "jj")
    assert [p for p, _, _ in found] == list(range(300))
    for c, o in enumerate(outcomes):
        mine = found[o.first_position : o.first_position + 30]
        assert {r for _, r, _ in mine} == {f"call-{c}"}
        assert [i for _, _, i in mine] == list(range(30))
    report = await GetBulkJob(uow).execute(ACME, "jj")
    assert (report.job.recipient_count, report.job.call_count) == (300, 10)
    assert (report.progress.refused, report.progress.accepted) == (60, 240)
    assert report.job.accepted_count == 240


async def test_concurrent_retries_of_one_call_add_its_recipients_once(
    uow: SqlUnitOfWorkFactory, scheduler: RedisScheduler, clean_db: AsyncEngine
) -> None:
    send = bulk_send(uow, scheduler)
    await send.execute(ACME, command("first", range(10), job_id="jr"))
    outcomes: list[BulkOutcome] = await asyncio.gather(
        *(send.execute(ACME, command("second", range(10), job_id="jr")) for _ in range(8))
    )
    assert sum(not o.replayed for o in outcomes) == 1
    answers = {
        tuple(r.notification.id if r.notification else r.refusal for r in o.results)
        for o in outcomes
    }
    assert len(answers) == 1
    assert {o.first_position for o in outcomes} == {10}
    assert len(await positions(clean_db, "jr")) == 20
    async with clean_db.connect() as conn:
        count = await conn.scalar(sa.text("SELECT count(*) FROM notifications"))
    assert count == 16
    with pytest.raises(IdempotencyConflict):
        await send.execute(ACME, command("second", range(11), job_id="jr"))


async def test_cancel_sweeps_the_job_and_empties_the_queue(
    uow: SqlUnitOfWorkFactory, scheduler: RedisScheduler, clean_db: AsyncEngine
) -> None:
    send = bulk_send(uow, scheduler)
    later = datetime.now(UTC) + timedelta(minutes=1)
    outcome = await send.execute(ACME, command("c", range(50), job_id="jc", scheduled_at=later))
    assert (await scheduler.depth(datetime.now(UTC)))["delayed"] == 40

    done = await CancelBulkJob(uow, scheduler, SystemClock()).execute(ACME, "jc")

    assert done.cancelled == 40
    assert (done.report.progress.cancelled, done.report.progress.refused) == (40, 10)
    assert done.report.state is BulkJobState.CANCELLED
    assert (await scheduler.depth(datetime.now(UTC)))["delayed"] == 0
    page, token = await ListBulkJobRecipients(uow).execute(ACME, "jc", 50, "")
    assert token == ""
    assert {v.status for v in page if v.recipient.notification_id} == {Status.CANCELLED}
    assert outcome.job.id == "jc"
