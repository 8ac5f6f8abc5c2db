"""The SQL repositories and unit of work against the real, migrated PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from application.errors import ConcurrentUpdate, Unavailable
from application.ports.repositories import (
    ApiKeyRecord,
    DeadLetterQuery,
    PageCursor,
    Tenant,
)
from domain.errors import NotFound
from domain.notification import (
    Address,
    AttemptOutcome,
    Channel,
    Content,
    DeliveryResult,
    ErrorClass,
    NewNotification,
    Notification,
    Priority,
    Rendered,
    RetryPolicy,
    Status,
)
from infrastructure.persistence.engine import sqlalchemy_url
from infrastructure.persistence.notification_rows import to_row
from infrastructure.persistence.row_batches import RowBatchInsert
from infrastructure.persistence.tables import notifications as notifications_table
from infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from tests.integration.test_notification_listing import plan_nodes

pytestmark = pytest.mark.integration

# Not UTC on purpose: the offset must survive (as the same instant) through timestamptz and JSON.
CET = timezone(timedelta(hours=1), "CET")
T0 = datetime(2026, 2, 3, 4, 5, 6, 123456, tzinfo=CET)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make(
    nid: str,
    *,
    tenant: str = "tenant-a",
    request_id: str | None = None,
    user: str = "user-1",
    channel: Channel = Channel.WEBHOOK,
    priority: Priority = Priority.MEDIUM,
    now: datetime = T0,
    scheduled_at: datetime | None = None,
    expires_at: datetime | None = None,
    metadata: dict[str, str] | None = None,
    rendered: Rendered | None = None,
    category: str = "order_shipped",
    content: Content | None = None,
) -> Notification:
    address = {
        Channel.WEBHOOK: Address.parse("webhook_url", "https://hooks.example.com/in?x=1"),
        Channel.EMAIL: Address.parse("email", "ada@example.com"),
        Channel.IN_APP: None,
    }[channel]
    return Notification.accept(
        NewNotification(
            request_id=request_id or f"req-{nid}",
            user_id=user,
            channel=channel,
            priority=priority,
            category=category,
            content=content or Content("Shipped ✓", "Your order 42 is on its way"),
            address=address,
            scheduled_at=scheduled_at,
            expires_at=expires_at,
            metadata=metadata or {},
            rendered=rendered,
        ),
        id=nid,
        tenant_id=tenant,
        caller="svc-orders",
        fingerprint=f"fp-{nid}",
        now=now,
    )


def delivered_in_app(nid: str, *, tenant: str = "tenant-a", user: str = "user-1") -> Notification:
    n = make(nid, tenant=tenant, user=user, channel=Channel.IN_APP)
    n.begin_attempt(at(1))
    n.record_success(at(2), DeliveryResult(provider="inbox", delivered=True))
    return n


async def add(uow: SqlUnitOfWorkFactory, *notifications: Notification) -> None:
    async with uow() as u:
        for n in notifications:
            assert await u.notifications.add(n)
        await u.commit()


async def count_rows(engine: AsyncEngine, table: str = "notifications") -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one())


# -- notifications: round trip ----------------------------------------------------------------


async def test_a_notification_round_trips_with_every_field(uow: SqlUnitOfWorkFactory) -> None:
    n = make(
        "n-1",
        scheduled_at=at(60),
        expires_at=at(3600),
        metadata={"order": "42", "note": "größe ✓", "empty": ""},
        rendered=Rendered(Content("t", "b"), "order_shipped", 3, "de-CH"),
    )
    n.bulk_job_id = "bulk-9"
    # Two attempts: one transient failure (back to QUEUED), one accepted.
    n.begin_attempt(at(61))
    n.record_failure(
        at(61.5),
        provider="webhook",
        error_class=ErrorClass.TRANSIENT,
        message="HTTP 503",
        policy=RetryPolicy(max_attempts=5),
        random=lambda: 0.5,
    )
    n.begin_attempt(at(70))
    n.record_success(at(70.25), DeliveryResult(provider="webhook", provider_message_id="rcv-7"))

    await add(uow, n)
    assert n.version == 1
    async with uow() as u:
        loaded = await u.notifications.get("tenant-a", "n-1")

    assert loaded == n
    # Spot checks of what equality covers, so a failure says what was lost.
    assert loaded.address == Address("webhook_url", "https://hooks.example.com/in?x=1")
    assert loaded.metadata == {"order": "42", "note": "größe ✓", "empty": ""}
    assert (loaded.template_name, loaded.template_version, loaded.locale) == (
        "order_shipped",
        3,
        "de-CH",
    )
    assert [c.status for c in loaded.history] == [
        Status.PENDING,
        Status.QUEUED,
        Status.SENDING,
        Status.QUEUED,
        Status.SENDING,
        Status.SENT,
    ]
    assert loaded.history[1].reason == "scheduled"
    assert [a.outcome for a in loaded.attempts] == [
        AttemptOutcome.TRANSIENT_FAILURE,
        AttemptOutcome.ACCEPTED,
    ]
    assert loaded.attempts[0].error_class is ErrorClass.TRANSIENT
    assert loaded.attempts[0].error_message == "HTTP 503"
    assert loaded.attempts[1].provider_message_id == "rcv-7"
    assert loaded.attempts[1].latency_ms == 250
    stamps = [
        loaded.created_at,
        loaded.updated_at,
        loaded.due_at,
        loaded.scheduled_at,
        loaded.expires_at,
        *(c.at for c in loaded.history),
        *(a.started_at for a in loaded.attempts),
        *(a.finished_at for a in loaded.attempts),
    ]
    assert all(s is not None and s.utcoffset() is not None for s in stamps)
    assert loaded.created_at == T0
    assert loaded.attempts[1].finished_at == at(70.25)
    assert loaded.version == 1


async def test_a_notification_without_address_or_schedule_round_trips(
    uow: SqlUnitOfWorkFactory,
) -> None:
    n = make("n-inbox", channel=Channel.IN_APP)
    await add(uow, n)
    async with uow() as u:
        loaded = await u.notifications.get("tenant-a", "n-inbox")
        by_request = await u.notifications.get_by_request_id("tenant-a", "req-n-inbox")
        for_delivery = await u.notifications.get_for_delivery("n-inbox")
    assert loaded == by_request == for_delivery == n
    assert loaded.address is None
    assert loaded.scheduled_at is None
    assert loaded.expires_at is None
    assert loaded.bulk_job_id is None
    assert loaded.attempts == []


async def test_another_tenants_notification_is_not_found(uow: SqlUnitOfWorkFactory) -> None:
    await add(uow, make("n-1", tenant="tenant-a"))
    async with uow() as u:
        with pytest.raises(NotFound) as caught:
            await u.notifications.get("tenant-b", "n-1")
        assert caught.value.key == "n-1"
        with pytest.raises(NotFound):
            await u.notifications.get("tenant-a", "no-such-id")
        assert await u.notifications.get_by_request_id("tenant-b", "req-n-1") is None
        assert await u.notifications.get_many("tenant-b", ["n-1"]) == []
        # Workers act for every tenant.
        assert (await u.notifications.get_for_delivery("n-1")) is not None
        assert await u.notifications.get_for_delivery("no-such-id") is None


# -- idempotency ------------------------------------------------------------------------------


async def test_add_refuses_a_reused_request_id_and_writes_nothing(
    uow: SqlUnitOfWorkFactory, clean_db: AsyncEngine
) -> None:
    first = make("n-1", request_id="same")
    await add(uow, first)

    duplicate = make("n-2", request_id="same", user="someone-else")
    async with uow() as u:
        assert await u.notifications.add(duplicate) is False
        await u.commit()
    assert duplicate.version == 0

    elsewhere = make("n-3", tenant="tenant-b", request_id="same")
    async with uow() as u:
        assert await u.notifications.add(elsewhere) is True
        await u.commit()

    assert await count_rows(clean_db) == 2
    async with uow() as u:
        assert (await u.notifications.get_by_request_id("tenant-a", "same")) == first
        assert (await u.notifications.get_by_request_id("tenant-b", "same")) == elsewhere
        with pytest.raises(NotFound):
            await u.notifications.get("tenant-a", "n-2")


async def test_add_many_returns_only_the_inserted_ids(
    uow: SqlUnitOfWorkFactory, clean_db: AsyncEngine
) -> None:
    await add(uow, make("old", request_id="r1"))
    batch = [
        make("new-1", request_id="r0"),
        make("clash", request_id="r1"),
        make("new-2", request_id="r2"),
        make("other-tenant", tenant="tenant-b", request_id="r1"),
    ]
    async with uow() as u:
        inserted = await u.notifications.add_many(batch)
        assert await u.notifications.add_many([]) == set()
        await u.commit()

    assert inserted == {"new-1", "new-2", "other-tenant"}
    assert [n.version for n in batch] == [1, 0, 1, 1]
    assert await count_rows(clean_db) == 4
    async with uow() as u:
        assert (await u.notifications.get_by_request_id("tenant-a", "r1")).id == "old"  # type: ignore[union-attr]


# -- optimistic concurrency -------------------------------------------------------------------


async def test_save_is_a_compare_and_set_on_the_version(uow: SqlUnitOfWorkFactory) -> None:
    await add(uow, make("n-1"))
    async with uow() as u:
        first = await u.notifications.get("tenant-a", "n-1")
    async with uow() as u:
        second = await u.notifications.get("tenant-a", "n-1")

    first.begin_attempt(at(1))
    async with uow() as u:
        await u.notifications.save(first)
        await u.commit()
    assert first.version == 2

    second.cancel(at(2))
    async with uow() as u:
        with pytest.raises(ConcurrentUpdate):
            await u.notifications.save(second)
        await u.commit()
    assert second.version == 1

    async with uow() as u:
        stored = await u.notifications.get("tenant-a", "n-1")
    assert stored.status is Status.SENDING
    assert stored.version == 2
    assert len(stored.attempts) == 1


async def test_save_many_writes_each_row_with_its_own_version_check(
    uow: SqlUnitOfWorkFactory,
) -> None:
    await add(uow, make("n-1"), make("n-2"), make("n-3", channel=Channel.IN_APP))
    async with uow() as u:
        loaded = await u.notifications.get_for_delivery_many(["n-1", "n-2", "n-3", "nope"])
    assert sorted(loaded) == ["n-1", "n-2", "n-3"]

    # Another writer moves n-2 on first: only that one is superseded.
    async with uow() as u:
        other = await u.notifications.get("tenant-a", "n-2")
        other.cancel(at(1))
        await u.notifications.save(other)
        await u.commit()
    batch = [loaded["n-1"], loaded["n-2"], loaded["n-3"]]
    for n in batch:
        n.begin_attempt(at(2))
    async with uow() as u:
        superseded = await u.notifications.save_many(batch)
        await u.commit()
    assert superseded == {"n-2"}
    assert [n.version for n in batch] == [2, 1, 2]

    # A cancel request joins n-1 while it is sent, without moving its version: the outcome
    # recorded next must keep it.
    async with uow() as u:
        [swept] = await u.notifications.get_many("tenant-a", ["n-1"])
        assert swept.request_cancel(at(3)) is False
        await u.notifications.record_cancel_request(swept)
        await u.commit()
    batch = [loaded["n-1"], loaded["n-3"]]
    for n in batch:
        n.record_success(at(4), DeliveryResult(provider="webhook", provider_message_id="m-1"))
    async with uow() as u:
        assert await u.notifications.save_many(batch) == set()
        await u.commit()
    assert [n.version for n in batch] == [3, 3]

    async with uow() as u:
        stored = await u.notifications.get_for_delivery_many(["n-1", "n-2", "n-3"])
    assert stored["n-2"].status is Status.CANCELLED
    for nid in ("n-1", "n-3"):
        # Every field as save() would have written it (times keep their instant, JSON its
        # offsets).
        assert stored[nid].status is Status.SENT
        assert replace(stored[nid], cancel_requested_at=None) == replace(
            loaded[nid], cancel_requested_at=None
        )
    assert stored["n-1"].cancel_requested_at == at(3)
    assert stored["n-3"].cancel_requested_at is None


async def test_save_many_refuses_one_notification_twice(uow: SqlUnitOfWorkFactory) -> None:
    await add(uow, make("n-1"))
    async with uow() as u:
        n = await u.notifications.get("tenant-a", "n-1")
        with pytest.raises(ValueError, match="twice"):
            await u.notifications.save_many([n, n])
        assert await u.notifications.save_many([]) == set()
        assert await u.notifications.get_for_delivery_many([]) == {}


async def test_a_cancel_request_joins_the_row_without_competing_with_its_worker(
    uow: SqlUnitOfWorkFactory,
) -> None:
    await add(uow, make("n-1"))
    async with uow() as u:
        worker = await u.notifications.get("tenant-a", "n-1")
        worker.begin_attempt(at(1))
        await u.notifications.save(worker)
        await u.commit()

    # A bulk cancel reaches it while the worker is sending.
    async with uow() as u:
        [swept] = await u.notifications.get_many("tenant-a", ["n-1"])
        assert swept.request_cancel(at(2)) is False
        await u.notifications.record_cancel_request(swept)
        await u.commit()
    async with uow() as u:
        stored = await u.notifications.get("tenant-a", "n-1")
    assert (stored.cancel_requested_at, stored.version) == (at(2), 2)

    # The worker records its outcome from the copy it loaded before the request: accepted, and
    # the request stays on the row.
    worker.record_failure(
        at(3),
        provider="webhook",
        error_class=ErrorClass.TRANSIENT,
        message="timeout",
        policy=RetryPolicy(),
        random=lambda: 0.5,
    )
    assert worker.cancel_requested_at is None
    async with uow() as u:
        await u.notifications.save(worker)
        await u.commit()
    async with uow() as u:
        stored = await u.notifications.get("tenant-a", "n-1")
    assert (stored.status, stored.cancel_requested_at, stored.version) == (
        Status.QUEUED,
        at(2),
        3,
    )
    # So the next claim cancels it instead of trying again.
    assert stored.begin_attempt(stored.due_at) is None
    assert stored.status is Status.CANCELLED

    # A second request keeps the first time.
    stored.cancel_requested_at = at(9)
    async with uow() as u:
        await u.notifications.record_cancel_request(stored)
        await u.commit()
    async with uow() as u:
        assert (await u.notifications.get("tenant-a", "n-1")).cancel_requested_at == at(2)


async def test_save_writes_every_change(uow: SqlUnitOfWorkFactory) -> None:
    await add(uow, make("n-1"))
    async with uow() as u:
        n = await u.notifications.get("tenant-a", "n-1")
        n.begin_attempt(at(1))
        n.record_failure(
            at(2),
            provider="webhook",
            error_class=ErrorClass.TRANSIENT,
            message="timeout",
            policy=RetryPolicy(max_attempts=3, base_delay=timedelta(seconds=10)),
            random=lambda: 1.0,
        )
        await u.notifications.save(n)
        await u.commit()
    async with uow() as u:
        stored = await u.notifications.get("tenant-a", "n-1")
    assert stored == n
    assert stored.status is Status.QUEUED
    assert stored.due_at == at(12)
    assert stored.status_reason == "retry after transient failure: timeout"


async def test_saving_a_notification_that_was_never_added_fails(
    uow: SqlUnitOfWorkFactory,
) -> None:
    async with uow() as u:
        with pytest.raises(ConcurrentUpdate):
            await u.notifications.save(make("ghost"))


# -- inbox ------------------------------------------------------------------------------------


async def test_count_unread_counts_only_delivered_in_app_of_that_tenant_and_user(
    uow: SqlUnitOfWorkFactory,
) -> None:
    read = delivered_in_app("read")
    read.mark_read(at(3))
    queued_in_app = make("queued", channel=Channel.IN_APP)
    sent_webhook = make("webhook")
    sent_webhook.begin_attempt(at(1))
    sent_webhook.record_success(at(2), DeliveryResult(provider="webhook"))
    delivered_webhook = make("webhook-delivered", request_id="r-wd")
    delivered_webhook.begin_attempt(at(1))
    delivered_webhook.record_success(at(2), DeliveryResult(provider="webhook", delivered=True))
    await add(
        uow,
        delivered_in_app("u1"),
        delivered_in_app("u2"),
        read,
        queued_in_app,
        sent_webhook,
        delivered_webhook,
        delivered_in_app("other-user", user="user-2"),
        delivered_in_app("other-tenant", tenant="tenant-b"),
    )
    async with uow() as u:
        assert await u.notifications.count_unread("tenant-a", "user-1") == 2
        assert await u.notifications.count_unread("tenant-a", "user-2") == 1
        assert await u.notifications.count_unread("tenant-b", "user-1") == 1
        assert await u.notifications.count_unread("tenant-a", "nobody") == 0


# -- unit of work -----------------------------------------------------------------------------


async def test_the_unit_of_work_rolls_back_what_was_not_committed(
    uow: SqlUnitOfWorkFactory, clean_db: AsyncEngine
) -> None:
    async with uow() as u:
        assert await u.notifications.add(make("n-1"))
        await u.tenants.add(Tenant("tenant-a", "whsec_x"), T0)
        # Visible inside its own transaction...
        assert (await u.notifications.get("tenant-a", "n-1")).id == "n-1"
    # ...and gone after.
    assert await count_rows(clean_db) == 0
    assert await count_rows(clean_db, "tenants") == 0


async def test_the_unit_of_work_rolls_back_when_an_exception_escapes(
    uow: SqlUnitOfWorkFactory, clean_db: AsyncEngine
) -> None:
    class Boom(Exception):
        pass

    async def add_then_fail() -> None:
        async with uow() as u:
            await u.notifications.add(make("n-1"))
            raise Boom

    async def cancel_then_fail() -> None:
        async with uow() as u:
            n = await u.notifications.get("tenant-a", "n-2")
            n.cancel(at(1))
            await u.notifications.save(n)
            raise Boom

    with pytest.raises(Boom):
        await add_then_fail()
    assert await count_rows(clean_db) == 0

    # A committed unit of work persists; a failing one does not change it.
    await add(uow, make("n-2"))
    with pytest.raises(Boom):
        await cancel_then_fail()
    async with uow() as u:
        assert (await u.notifications.get("tenant-a", "n-2")).status is Status.QUEUED


async def test_uncommitted_writes_are_invisible_to_other_units_of_work(
    uow: SqlUnitOfWorkFactory,
) -> None:
    async with uow() as writer:
        await writer.notifications.add(make("n-1"))
        async with uow() as reader:
            assert await reader.notifications.get_for_delivery("n-1") is None
        await writer.commit()
    async with uow() as reader:
        assert await reader.notifications.get_for_delivery("n-1") is not None


# -- get_many, in_flight, list_failed --------------------------------------------------------------


async def test_get_many_returns_the_tenants_rows_locked_for_update(
    uow: SqlUnitOfWorkFactory, clean_db: AsyncEngine
) -> None:
    await add(uow, make("b"), make("a"), make("c"), make("x", tenant="tenant-b"))
    async with uow() as u:
        found = await u.notifications.get_many(
            "tenant-a", ["c", "a", "x", "missing"], for_update=True
        )
        assert [n.id for n in found] == ["a", "c"]
        assert await u.notifications.get_many("tenant-a", []) == []

        # Another transaction cannot change a row get_many returned until this one ends...
        async with clean_db.connect() as other:
            await other.execute(sa.text("SET lock_timeout = '200ms'"))
            with pytest.raises(sa_exc.OperationalError, match="lock"):
                await other.execute(
                    sa.text("UPDATE notifications SET status_reason = 'x' WHERE id = 'a'")
                )
            await other.rollback()
            # ...but rows it did not return are free.
            await other.execute(
                sa.text("UPDATE notifications SET status_reason = 'x' WHERE id = 'b'")
            )
            await other.commit()


async def test_get_many_without_for_update_neither_waits_for_nor_holds_a_row_lock(
    uow: SqlUnitOfWorkFactory, clean_db: AsyncEngine
) -> None:
    # A reader that locked would deadlock with a worker updating the same rows in another order.
    await add(uow, make("a"), make("b"))
    async with clean_db.connect() as writer:
        await writer.execute(sa.text("UPDATE notifications SET status_reason = 'w' WHERE id = 'b'"))
        async with uow() as u:
            found = await asyncio.wait_for(u.notifications.get_many("tenant-a", ["b", "a"]), 5)
            assert [(n.id, n.status_reason) for n in found] == [("a", ""), ("b", "")]
            async with clean_db.connect() as other:
                await other.execute(sa.text("SET lock_timeout = '200ms'"))
                await other.execute(
                    sa.text("UPDATE notifications SET status_reason = 'o' WHERE id = 'a'")
                )
                await other.commit()
        await writer.rollback()


async def test_in_flight_pages_unsettled_work_by_id_across_tenants(
    uow: SqlUnitOfWorkFactory,
) -> None:
    sending = make("sending", now=at(-30))
    sending.begin_attempt(at(-29))
    sent = make("sent", now=at(-20))
    sent.begin_attempt(at(-19))
    sent.record_success(at(-18), DeliveryResult(provider="webhook"))
    cancelled = make("cancelled", now=at(-40))
    cancelled.cancel(at(-39))
    await add(
        uow,
        make("queued-old", now=at(-50)),
        make("queued-new", now=at(-10)),
        make("scheduled", now=at(-60), scheduled_at=at(100)),
        sending,
        sent,
        cancelled,
        make("other-tenant", tenant="tenant-b", now=at(-5)),
    )
    async with uow() as u:
        everything = await u.notifications.in_flight("", 100)
        assert [e.id for e in everything] == [
            "other-tenant",
            "queued-new",
            "queued-old",
            "scheduled",
            "sending",
        ]
        by_id = {e.id: e for e in everything}
        assert by_id["sending"].status is Status.SENDING
        assert by_id["scheduled"].due_at == at(100)
        assert by_id["queued-old"].priority is Priority.MEDIUM
        first = await u.notifications.in_flight("", 2)
        rest = await u.notifications.in_flight(first[-1].id, 100)
        assert [e.id for e in first + rest] == [e.id for e in everything]


async def test_in_flight_reads_one_batch_of_a_backlog_the_statistics_never_saw(
    clean_db: AsyncEngine,
) -> None:
    """Statistics taken when the table was empty, then a backlog of 5,000 queued rows: a
    batch of 1,000 must read about 1,000 rows (an index walk in id order), not the whole
    backlog and a sort. The statements in_flight sends are replayed in one transaction, its SELECT
    under EXPLAIN ANALYZE."""
    async with clean_db.begin() as conn:
        await conn.execute(sa.text("ANALYZE notifications"))
        await conn.execute(sa.text(BACKLOG.format(status="QUEUED", prefix="queued")))
    sent: list[tuple[str, Any]] = []

    def capture(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        sent.append((statement, parameters))

    uow = SqlUnitOfWorkFactory(clean_db)
    sa.event.listen(clean_db.sync_engine, "before_cursor_execute", capture)
    try:
        async with uow() as u:
            batch = await u.notifications.in_flight("queued-0000100", 1000)
    finally:
        sa.event.remove(clean_db.sync_engine, "before_cursor_execute", capture)
    assert [e.id for e in batch] == [f"queued-{i:07d}" for i in range(101, 1101)]

    async with clean_db.begin() as conn:
        for statement, parameters in sent:
            if "FROM notifications" in statement:
                raw = (
                    await conn.exec_driver_sql(
                        f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters
                    )
                ).scalar_one()
                plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
            else:
                await conn.exec_driver_sql(statement, parameters)
        after = (await conn.execute(sa.text("SHOW enable_bitmapscan"))).scalar_one()
    nodes = list(plan_nodes(plan))
    kinds = {node["Node Type"] for node in nodes}
    assert not kinds & {"Sort", "Bitmap Heap Scan", "Seq Scan"}, json.dumps(plan, indent=1)
    assert max(node["Actual Rows"] for node in nodes) <= 1001, json.dumps(plan, indent=1)
    assert after == "on", "the planner settings outlive the batch"


async def test_an_in_flight_batch_that_cannot_run_reports_postgres_unavailable(
    clean_db: AsyncEngine, database_url: str
) -> None:
    """The table is locked past the reader's lock_timeout: the SELECT fails, and the caller
    (the reconciler, whose worker backs off on Unavailable) must see that failure, not the
    "transaction is aborted" of a statement sent after it."""
    impatient = create_async_engine(
        sqlalchemy_url(database_url), connect_args={"options": "-c lock_timeout=100"}
    )
    try:
        async with clean_db.begin() as holder:
            await holder.execute(sa.text("LOCK TABLE notifications IN ACCESS EXCLUSIVE MODE"))
            with pytest.raises(Unavailable, match="lock"):
                async with SqlUnitOfWorkFactory(impatient)() as u:
                    await u.notifications.in_flight("", 10)
    finally:
        await impatient.dispose()


BACKLOG = """
    INSERT INTO notifications (
        id, tenant_id, caller_service, request_id, request_fingerprint, user_id, channel,
        priority, category, title, body, template_name, template_version, locale, status,
        status_reason, created_at, updated_at, due_at, metadata, history, attempts, version)
    SELECT '{prefix}-' || lpad(g::text, 7, '0'), 'tenant-a', 'svc', '{prefix}-' || g, 'fp',
           'user-1', 'WEBHOOK', 2, 'c', 't', 'b', '', 0, '', '{status}', '', now(), now(),
           now(), '{{}}'::jsonb, '[]'::jsonb, '[]'::jsonb, 1
    FROM generate_series(1, 5000) AS g
"""


async def _failed(
    uow: SqlUnitOfWorkFactory,
    id: str,
    failed_at: datetime,
    *,
    channel: Channel = Channel.WEBHOOK,
    category: str = "order_shipped",
    error: ErrorClass = ErrorClass.PERMANENT,
    tenant: str = "tenant-a",
) -> None:
    n = make(
        id,
        tenant=tenant,
        channel=channel,
        category=category,
        now=failed_at - timedelta(seconds=2),
    )
    n.begin_attempt(failed_at - timedelta(seconds=1))
    n.record_failure(
        failed_at,
        provider="webhook",
        error_class=error,
        message="boom",
        policy=RetryPolicy(max_attempts=1),
        random=lambda: 0.5,
    )
    await add(uow, n)


async def test_list_failed_filters_orders_newest_first_and_pages_by_keyset(
    uow: SqlUnitOfWorkFactory,
) -> None:
    await _failed(uow, "f1", at(10))
    await _failed(uow, "f2", at(20), error=ErrorClass.TRANSIENT)
    await _failed(uow, "f3", at(30), category="invoice")
    await _failed(uow, "f4", at(40), channel=Channel.IN_APP)
    await _failed(uow, "other", at(50), tenant="tenant-b")
    await add(uow, make("queued"))
    async with uow() as u:
        page = await u.notifications.list_failed("tenant-a", DeadLetterQuery(), 10, None)
        assert [n.id for n in page] == ["f4", "f3", "f2", "f1"]
        first = await u.notifications.list_failed("tenant-a", DeadLetterQuery(), 2, None)
        after = PageCursor(first[-1].updated_at, first[-1].id)
        second = await u.notifications.list_failed("tenant-a", DeadLetterQuery(), 2, after)
        assert [n.id for n in first + second] == ["f4", "f3", "f2", "f1"]

        async def ids(query: DeadLetterQuery) -> list[str]:
            return [n.id for n in await u.notifications.list_failed("tenant-a", query, 10, None)]

        assert await ids(DeadLetterQuery(channel=Channel.IN_APP)) == ["f4"]
        assert await ids(DeadLetterQuery(category="invoice")) == ["f3"]
        assert await ids(DeadLetterQuery(error_class="TRANSIENT")) == ["f2"]
        assert await ids(DeadLetterQuery(failed_from=at(20), failed_before=at(40))) == [
            "f3",
            "f2",
        ]


# -- API keys and tenants ---------------------------------------------------------------------


async def test_tenant_add_and_get(uow: SqlUnitOfWorkFactory) -> None:
    async with uow() as u:
        await u.tenants.add(Tenant("tenant-a", "whsec_first"), T0)
        # Adding again is a no-op: the original secret stays.
        await u.tenants.add(Tenant("tenant-a", "whsec_second"), T0)
        await u.tenants.add(Tenant("tenant-b", "whsec_b"), T0)
        await u.commit()
    async with uow() as u:
        assert await u.tenants.get("tenant-a") == Tenant("tenant-a", "whsec_first")
        assert await u.tenants.get("tenant-b") == Tenant("tenant-b", "whsec_b")
        assert await u.tenants.get("tenant-c") is None


async def test_api_keys_are_found_by_hash_only(uow: SqlUnitOfWorkFactory) -> None:
    key_hash = hashlib.sha256(b"nfy_secret-key").digest()
    revoked_hash = hashlib.sha256(b"nfy_old-key").digest()
    async with uow() as u:
        await u.tenants.add(Tenant("tenant-a", "whsec_x"), T0)
        await u.api_keys.add(ApiKeyRecord("k1", "tenant-a", "svc-orders", False), key_hash, T0)
        await u.api_keys.add(ApiKeyRecord("k0", "tenant-a", "svc-old", True), revoked_hash, T0)
        await u.commit()
    async with uow() as u:
        assert await u.api_keys.find_by_hash(key_hash) == ApiKeyRecord(
            "k1", "tenant-a", "svc-orders", revoked=False
        )
        assert await u.api_keys.find_by_hash(revoked_hash) == ApiKeyRecord(
            "k0", "tenant-a", "svc-old", revoked=True
        )
        assert await u.api_keys.find_by_hash(hashlib.sha256(b"other").digest()) is None


async def test_an_api_key_needs_an_existing_tenant_and_a_unique_hash(
    uow: SqlUnitOfWorkFactory,
) -> None:
    key_hash = hashlib.sha256(b"k").digest()
    with pytest.raises(sa_exc.IntegrityError):
        async with uow() as u:
            await u.api_keys.add(ApiKeyRecord("k1", "no-tenant", "svc", False), key_hash, T0)
    async with uow() as u:
        await u.tenants.add(Tenant("tenant-a", "whsec_x"), T0)
        await u.api_keys.add(ApiKeyRecord("k1", "tenant-a", "svc", False), key_hash, T0)
        await u.commit()
    with pytest.raises(sa_exc.IntegrityError):
        async with uow() as u:
            await u.api_keys.add(ApiKeyRecord("k2", "tenant-a", "svc", False), key_hash, T0)


# -- a bigger batch ---------------------------------------------------------------------------


async def test_add_many_of_a_large_batch_round_trips(uow: SqlUnitOfWorkFactory) -> None:
    rng = random.Random(7)
    batch = [
        make(
            f"n-{i:04d}",
            priority=rng.choice(list(Priority)),
            channel=rng.choice([Channel.WEBHOOK, Channel.IN_APP, Channel.EMAIL]),
            now=at(i),
        )
        for i in range(300)
    ]
    async with uow() as u:
        assert await u.notifications.add_many(batch) == {n.id for n in batch}
        await u.commit()
    async with uow() as u:
        loaded = await u.notifications.get_many("tenant-a", [n.id for n in batch])
    assert loaded == batch
    assert all(n.created_at.tzinfo is not None for n in loaded)
    assert loaded[-1].created_at.astimezone(UTC) == at(299).astimezone(UTC)


async def test_add_many_keeps_text_that_looks_like_json_or_escapes(
    uow: SqlUnitOfWorkFactory,
) -> None:
    awkward = 'He said "hi" \\ {"a": [1]} \\u0041 \n\t line ✓ 𝄞 null'
    n = make(
        "n-awkward",
        metadata={'k"ey': awkward, "null": "null"},
        content=Content(awkward, "[1, 2]", html="<p>&amp;</p>", data={"nested": awkward}),
    )
    async with uow() as u:
        assert await u.notifications.add_many([n]) == {"n-awkward"}
        await u.commit()
    async with uow() as u:
        (loaded,) = await u.notifications.get_many("tenant-a", ["n-awkward"])
    assert loaded == n
    assert loaded.content.title == awkward
    assert loaded.metadata['k"ey'] == awkward


async def test_a_batch_row_without_a_column_is_refused_before_it_is_sent(
    clean_db: AsyncEngine,
) -> None:
    insert = RowBatchInsert(notifications_table)
    row = to_row(make("n-partial")) | {"version": 1}
    del row["html"]
    async with clean_db.connect() as conn:
        with pytest.raises(ValueError, match="html"):
            await insert.execute(conn, [row])
        count = (await conn.execute(sa.text("SELECT count(*) FROM notifications"))).scalar_one()
    assert count == 0
