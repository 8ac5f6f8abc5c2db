"""GetStats against the real PostgreSQL, on a data set whose every figure is worked out by hand
(percentiles with percentile_cont's linear interpolation between the nearest ranks)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from application.ports.notification_queries import DeliveryStats, StatsReport
from application.principal import Principal
from application.use_cases.stats import GetStats
from domain.notification import (
    Address,
    Channel,
    Content,
    Decision,
    DeliveryResult,
    EngagementAction,
    ErrorClass,
    NewNotification,
    Notification,
    Priority,
    RetryPolicy,
    Status,
    Verdict,
)
from infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 4, 0, 0, tzinfo=UTC)
END = T0 + timedelta(days=1)
NOW = END + timedelta(hours=1)
ACME = Principal("acme", "orders")
A = EngagementAction
ADDRESSES: dict[Channel, Address | None] = {
    Channel.EMAIL: Address("email", "ada@example.com"),
    Channel.WEBHOOK: Address("webhook_url", "https://hooks.example.com/in"),
    Channel.IN_APP: None,
}


class Clock:
    def now(self) -> datetime:
        return NOW


def new(
    nid: str,
    minute: int,
    channel: Channel,
    category: str,
    *,
    tenant: str = "acme",
    scheduled_in: timedelta | None = None,
    expires_in: timedelta | None = None,
    decision: Decision | None = None,
) -> Notification:
    created = T0 + timedelta(minutes=minute)
    return Notification.accept(
        NewNotification(
            request_id=f"req-{nid}",
            user_id="user-1",
            channel=channel,
            priority=Priority.MEDIUM,
            category=category,
            content=Content("t", "b"),
            address=ADDRESSES[channel],
            scheduled_at=created + scheduled_in if scheduled_in else None,
            expires_at=created + expires_in if expires_in else None,
        ),
        id=nid,
        tenant_id=tenant,
        caller="orders",
        fingerprint=f"fp-{nid}",
        now=created,
        decision=decision,
    )


def sent(n: Notification, latency_ms: int, provider: str, *, delivered: bool = False) -> None:
    due = n.scheduled_at or n.created_at
    n.begin_attempt(due)
    n.record_success(
        due + timedelta(milliseconds=latency_ms),
        DeliveryResult(provider, f"msg-{n.id}", delivered=delivered),
    )


def dataset() -> list[Notification]:
    rows: list[Notification] = []
    # WEBHOOK / webhook / order_shipped: ten accepted, 100..1000 ms.
    engaged = {
        1: [A.DELIVERED],  # -> DELIVERED
        2: [A.DELIVERED, A.OPENED],  # -> READ
        3: [A.OPENED, A.CLICKED],  # -> READ
        4: [A.CLICKED],  # -> READ (a click is an open)
        5: [A.DISMISSED],  # stays SENT
    }
    for i in range(1, 11):
        n = new(f"hook-{i:02d}", i, Channel.WEBHOOK, "order_shipped")
        sent(n, i * 100, "webhook")
        for action in engaged.get(i, []):
            assert n.engage(action, n.updated_at, n.updated_at)
        rows.append(n)
    # WEBHOOK / webhook / order_shipped too: two the provider refused for good.
    for i in (1, 2):
        n = new(f"failed-{i}", 20 + i, Channel.WEBHOOK, "order_shipped")
        n.begin_attempt(n.created_at)
        n.record_failure(
            n.created_at + timedelta(seconds=1),
            provider="webhook",
            error_class=ErrorClass.PERMANENT,
            message="410 gone",
            policy=RetryPolicy(),
            random=lambda: 0.5,
        )
        rows.append(n)
    expired = new("expired", 23, Channel.WEBHOOK, "order_shipped", expires_in=timedelta(minutes=1))
    expired.expire(expired.created_at + timedelta(minutes=1))
    cancelled = new("cancelled", 24, Channel.WEBHOOK, "order_shipped")
    cancelled.cancel(cancelled.created_at + timedelta(seconds=1))
    suppressed = new(
        "suppressed",
        25,
        Channel.WEBHOOK,
        "order_shipped",
        decision=Decision(Verdict.SUPPRESS, "opted out"),
    )
    # WEBHOOK / (no provider) / order_shipped: none tried by a provider.
    rows += [expired, cancelled, suppressed, new("queued", 26, Channel.WEBHOOK, "order_shipped")]
    # IN_APP / inbox / mention: 40, 60, 250 (from its schedule, an hour after creation), 1200.
    for nid, minute, latency, scheduled in (
        ("inbox-1", 30, 40, None),
        ("inbox-2", 31, 60, None),
        ("inbox-3", 32, 250, timedelta(hours=1)),
        ("inbox-4", 33, 1200, None),
    ):
        n = new(nid, minute, Channel.IN_APP, "mention", scheduled_in=scheduled)
        sent(n, latency, "inbox", delivered=True)
        rows.append(n)
    # Read in the inbox (MarkAsRead): opened without an OPENED engagement.
    rows[-3].mark_read(rows[-3].updated_at)
    # EMAIL / smtp-backup / order_shipped: the first provider was down, the backup took it
    # 350 ms after creation.
    email = new("email-1", 40, Channel.EMAIL, "order_shipped")
    email.begin_attempt(email.created_at)
    email.record_failover(
        email.created_at + timedelta(milliseconds=100), provider="smtp", message="down"
    )
    email.record_success(
        email.created_at + timedelta(milliseconds=350), DeliveryResult("smtp-backup", "m-1")
    )
    rows.append(email)
    # Outside the window or the tenant: never counted.
    for nid, minute, tenant in (
        ("too-early", -1, "acme"),
        ("at-the-end", 24 * 60, "acme"),
        ("other-tenant", 5, "globex"),
    ):
        n = new(nid, minute, Channel.WEBHOOK, "order_shipped", tenant=tenant)
        sent(n, 5000, "webhook")
        rows.append(n)
    return rows


@pytest.fixture
async def loaded(uow: SqlUnitOfWorkFactory) -> SqlUnitOfWorkFactory:
    rows = dataset()
    async with uow() as u:
        assert len(await u.notifications.add_many(rows)) == len(rows)
        await u.commit()
    return uow


def counts(s: DeliveryStats) -> dict[Status, int]:
    return dict(s.status_counts)


async def report(uow: SqlUnitOfWorkFactory, **filters: object) -> StatsReport:
    return await GetStats(uow, Clock()).execute(ACME, T0, END, **filters)  # type: ignore[arg-type]


async def test_every_figure_of_every_group_and_the_total(loaded: SqlUnitOfWorkFactory) -> None:
    r = await report(loaded)
    assert [(g.channel, g.provider, g.category) for g in r.groups] == [
        (Channel.EMAIL, "smtp-backup", "order_shipped"),
        (Channel.IN_APP, "inbox", "mention"),
        (Channel.WEBHOOK, "", "order_shipped"),
        (Channel.WEBHOOK, "webhook", "order_shipped"),
    ]
    email, inbox, unsent, hooks = r.groups

    assert counts(email) == {Status.SENT: 1}
    assert email.success_rate == 1.0
    assert (email.latency_p50_ms, email.latency_p95_ms, email.latency_p99_ms) == (350, 350, 350)
    assert (email.opened_count, email.clicked_count) == (0, 0)

    assert counts(inbox) == {Status.DELIVERED: 3, Status.READ: 1}
    assert inbox.success_rate == 1.0
    # [40, 60, 250, 1200]: p50 at rank 1.5, p95 at 2.85, p99 at 2.97.
    assert inbox.latency_p50_ms == pytest.approx(60 + 0.5 * 190)
    assert inbox.latency_p95_ms == pytest.approx(250 + 0.85 * 950)
    assert inbox.latency_p99_ms == pytest.approx(250 + 0.97 * 950)
    assert (inbox.opened_count, inbox.clicked_count) == (1, 0)
    assert (inbox.open_rate, inbox.click_rate) == (0.25, 0.0)

    assert counts(unsent) == {
        Status.EXPIRED: 1,
        Status.CANCELLED: 1,
        Status.SUPPRESSED: 1,
        Status.QUEUED: 1,
    }
    assert unsent.total_count == 4
    assert unsent.success_rate == 0.0
    assert (unsent.latency_p50_ms, unsent.latency_p95_ms, unsent.latency_p99_ms) == (0, 0, 0)
    assert (unsent.opened_count, unsent.open_rate) == (0, 0.0)

    # The failures count against the provider that failed them.
    assert counts(hooks) == {Status.SENT: 6, Status.DELIVERED: 1, Status.READ: 3, Status.FAILED: 2}
    assert hooks.success_rate == pytest.approx(10 / 12)
    # [100, 200, ..., 1000]: p50 at rank 4.5, p95 at 8.55, p99 at 8.91.
    assert hooks.latency_p50_ms == pytest.approx(550)
    assert hooks.latency_p95_ms == pytest.approx(955)
    assert hooks.latency_p99_ms == pytest.approx(991)
    assert (hooks.opened_count, hooks.clicked_count) == (3, 2)
    assert (hooks.open_rate, hooks.click_rate) == (0.3, 0.2)

    total = r.total
    assert (total.channel, total.provider, total.category) == (None, "", "")
    assert total.total_count == 21
    assert counts(total) == {
        Status.SENT: 7,
        Status.DELIVERED: 4,
        Status.READ: 4,
        Status.FAILED: 2,
        Status.EXPIRED: 1,
        Status.CANCELLED: 1,
        Status.SUPPRESSED: 1,
        Status.QUEUED: 1,
    }
    assert total.success_rate == pytest.approx(15 / 18)
    # All 15 latencies: 40 60 100 200 250 300 350 400 500 600 700 800 900 1000 1200.
    assert total.latency_p50_ms == pytest.approx(400)
    assert total.latency_p95_ms == pytest.approx(1000 + 0.3 * 200)
    assert total.latency_p99_ms == pytest.approx(1000 + 0.86 * 200)
    assert (total.opened_count, total.clicked_count) == (4, 2)
    assert total.open_rate == pytest.approx(4 / 15)
    assert total.click_rate == pytest.approx(2 / 15)


async def test_a_channel_or_category_filter_narrows_groups_and_total(
    loaded: SqlUnitOfWorkFactory,
) -> None:
    for r in (
        await report(loaded, channel=Channel.IN_APP),
        await report(loaded, category="mention"),
    ):
        assert [(g.channel, g.provider) for g in r.groups] == [(Channel.IN_APP, "inbox")]
        assert counts(r.total) == {Status.DELIVERED: 3, Status.READ: 1}
        assert r.total.latency_p50_ms == pytest.approx(155)
    both = await report(loaded, channel=Channel.EMAIL, category="mention")
    assert (both.groups, both.total.total_count) == ([], 0)


async def test_an_empty_window_has_an_empty_total(loaded: SqlUnitOfWorkFactory) -> None:
    r = await GetStats(loaded, Clock()).execute(ACME, END + timedelta(minutes=1), NOW)
    assert r.groups == []
    assert r.total == DeliveryStats(None, "", "")


async def test_provider_is_the_last_to_try_and_sent_at_the_acceptance(
    loaded: SqlUnitOfWorkFactory, clean_db: AsyncEngine
) -> None:
    async with clean_db.connect() as conn:
        rows = {
            r.id: (r.provider, r.sent_at)
            for r in await conn.execute(
                sa.text(
                    "SELECT id, provider, sent_at FROM notifications"
                    " WHERE id IN ('email-1', 'inbox-3', 'failed-1', 'queued')"
                )
            )
        }
    created = T0 + timedelta(minutes=40)
    assert rows["email-1"] == ("smtp-backup", created + timedelta(milliseconds=350))
    scheduled = T0 + timedelta(minutes=32, hours=1)
    assert rows["inbox-3"] == ("inbox", scheduled + timedelta(milliseconds=250))
    assert rows["failed-1"] == ("webhook", None)
    assert rows["queued"] == (None, None)
