"""ListNotifications against the real, migrated PostgreSQL: filters, tenant isolation, AIP-158
paging at its edges, and query plans that stay index range scans with many rows."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from application.ports.notification_queries import NotificationQuery
from application.ports.repositories import PageCursor
from application.principal import Principal
from application.use_cases.notification_listing import ListNotifications
from domain.errors import ValidationFailed
from domain.notification import (
    Address,
    Channel,
    Content,
    DeliveryResult,
    NewNotification,
    Notification,
    Priority,
    Status,
)
from infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ACME = Principal("acme", "orders")
GLOBEX = Principal("globex", "billing")
ADDRESSES: dict[Channel, Address | None] = {
    Channel.EMAIL: Address("email", "ada@example.com"),
    Channel.WEBHOOK: Address("webhook_url", "https://hooks.example.com/in"),
    Channel.IN_APP: None,
}
CHANNELS = list(ADDRESSES)
CATEGORIES = ["order_shipped", "invoice_ready", "mention"]
CALLERS = ["orders", "billing"]
USERS = ["user-1", "user-2", "user-3"]


def make(
    nid: str,
    created: datetime,
    *,
    tenant: str = "acme",
    user: str = "user-1",
    channel: Channel = Channel.IN_APP,
    priority: Priority = Priority.MEDIUM,
    category: str = "order_shipped",
    caller: str = "orders",
    delivered: bool = False,
) -> Notification:
    n = Notification.accept(
        NewNotification(
            request_id=f"req-{nid}",
            user_id=user,
            channel=channel,
            priority=priority,
            category=category,
            content=Content("Hello", "World"),
            address=ADDRESSES[channel],
        ),
        id=nid,
        tenant_id=tenant,
        caller=caller,
        fingerprint=f"fp-{nid}",
        now=created,
    )
    if delivered:
        n.begin_attempt(created + timedelta(seconds=1))
        n.record_success(
            created + timedelta(seconds=2),
            DeliveryResult(channel.lower(), delivered=channel is Channel.IN_APP),
        )
    return n


async def add(uow: SqlUnitOfWorkFactory, notifications: list[Notification]) -> None:
    async with uow() as u:
        assert len(await u.notifications.add_many(notifications)) == len(notifications)
        await u.commit()


def varied() -> Iterator[Notification]:
    """A notification for every combination of the filters, one minute apart."""
    combos = itertools.product(USERS, CHANNELS, CATEGORIES, CALLERS, [Priority.LOW, Priority.HIGH])
    for i, (user, channel, category, caller, priority) in enumerate(combos):
        yield make(
            f"n-{i:03d}",
            T0 + timedelta(minutes=i),
            user=user,
            channel=channel,
            priority=priority,
            category=category,
            caller=caller,
            delivered=i % 3 == 0,
        )


@pytest.fixture
async def dataset(uow: SqlUnitOfWorkFactory) -> list[Notification]:
    rows = list(varied())
    await add(uow, rows)
    # Another tenant's rows match every filter but must never show.
    await add(uow, [make(f"g-{i}", T0 + timedelta(minutes=i), tenant="globex") for i in range(5)])
    return rows


async def list_all(
    uow: SqlUnitOfWorkFactory,
    query: NotificationQuery,
    size: int,
    principal: Principal = ACME,
) -> list[list[str]]:
    listing = ListNotifications(uow)
    pages: list[list[str]] = []
    token = ""
    while True:
        page, token = await listing.execute(principal, query, size, token)
        pages.append([n.id for n in page])
        if not token:
            return pages


def newest_first(rows: list[Notification]) -> list[str]:
    return [n.id for n in sorted(rows, key=lambda n: (n.created_at, n.id), reverse=True)]


FILTERS: dict[str, tuple[NotificationQuery, Any]] = {
    "user": (NotificationQuery(user_id="user-2"), lambda n: n.user_id == "user-2"),
    "one status": (
        NotificationQuery(statuses=frozenset({Status.SENT})),
        lambda n: n.status is Status.SENT,
    ),
    "two statuses": (
        NotificationQuery(statuses=frozenset({Status.DELIVERED, Status.QUEUED})),
        lambda n: n.status in (Status.DELIVERED, Status.QUEUED),
    ),
    "channel": (NotificationQuery(channel=Channel.EMAIL), lambda n: n.channel is Channel.EMAIL),
    "category": (NotificationQuery(category="mention"), lambda n: n.category == "mention"),
    "priority": (
        NotificationQuery(priority=Priority.HIGH),
        lambda n: n.priority is Priority.HIGH,
    ),
    "caller": (NotificationQuery(caller_service="billing"), lambda n: n.caller == "billing"),
    "from": (
        NotificationQuery(created_from=T0 + timedelta(minutes=50)),
        lambda n: n.created_at >= T0 + timedelta(minutes=50),
    ),
    "before": (
        NotificationQuery(created_before=T0 + timedelta(minutes=50)),
        lambda n: n.created_at < T0 + timedelta(minutes=50),
    ),
    "combined": (
        NotificationQuery(
            user_id="user-3",
            statuses=frozenset({Status.QUEUED}),
            channel=Channel.WEBHOOK,
            category="invoice_ready",
            caller_service="orders",
            created_from=T0 + timedelta(minutes=10),
            created_before=T0 + timedelta(minutes=200),
        ),
        lambda n: (
            n.user_id == "user-3"
            and n.status is Status.QUEUED
            and n.channel is Channel.WEBHOOK
            and n.category == "invoice_ready"
            and n.caller == "orders"
            and T0 + timedelta(minutes=10) <= n.created_at < T0 + timedelta(minutes=200)
        ),
    ),
    "combined with priority": (
        NotificationQuery(category="mention", priority=Priority.LOW, channel=Channel.IN_APP),
        lambda n: (
            n.category == "mention" and n.priority is Priority.LOW and n.channel is Channel.IN_APP
        ),
    ),
}


@pytest.mark.parametrize("name", list(FILTERS))
async def test_each_filter_alone_and_combined(
    uow: SqlUnitOfWorkFactory, dataset: list[Notification], name: str
) -> None:
    query, keep = FILTERS[name]
    expected = newest_first([n for n in dataset if keep(n)])
    assert expected, "the data set must have rows for every filter"
    assert len(expected) < len(dataset)
    pages = await list_all(uow, query, 7)
    assert [nid for page in pages for nid in page] == expected
    assert all(len(page) == 7 for page in pages[:-1])


async def test_no_filter_lists_only_the_callers_tenant(
    uow: SqlUnitOfWorkFactory, dataset: list[Notification]
) -> None:
    pages = await list_all(uow, NotificationQuery(), 1000)
    assert pages == [newest_first(dataset)]
    theirs = await list_all(uow, NotificationQuery(), 0, GLOBEX)
    assert theirs == [[f"g-{i}" for i in reversed(range(5))]]


async def test_a_listed_notification_carries_its_full_record(
    uow: SqlUnitOfWorkFactory, dataset: list[Notification]
) -> None:
    page, _ = await ListNotifications(uow).execute(
        ACME, NotificationQuery(statuses=frozenset({Status.DELIVERED})), 1, ""
    )
    listed = page[0]
    original = next(n for n in dataset if n.id == listed.id)
    assert listed.history == original.history
    assert listed.attempts == original.attempts
    assert (listed.tenant_id, listed.caller, listed.content) == (
        "acme",
        original.caller,
        original.content,
    )


# -- paging edges ---------------------------------------------------------------------------


@pytest.fixture
async def thousand_and_one(uow: SqlUnitOfWorkFactory) -> list[Notification]:
    rows = [make(f"m-{i:04d}", T0 + timedelta(seconds=i)) for i in range(1001)]
    await add(uow, rows)
    return rows


@pytest.mark.parametrize(("size", "first_page"), [(0, 100), (1, 1), (1000, 1000)])
async def test_page_sizes(
    uow: SqlUnitOfWorkFactory, thousand_and_one: list[Notification], size: int, first_page: int
) -> None:
    listing = ListNotifications(uow)
    page, token = await listing.execute(ACME, NotificationQuery(), size, "")
    assert [n.id for n in page] == newest_first(thousand_and_one)[:first_page]
    assert token
    if size == 1000:
        last, token = await listing.execute(ACME, NotificationQuery(), size, token)
        assert [n.id for n in last] == ["m-0000"]
        assert token == ""


@pytest.mark.parametrize("size", [1001, -1])
async def test_page_sizes_out_of_range(uow: SqlUnitOfWorkFactory, size: int) -> None:
    with pytest.raises(ValidationFailed) as info:
        await ListNotifications(uow).execute(ACME, NotificationQuery(), size, "")
    assert [v.field for v in info.value.violations] == ["page_size"]


async def test_an_exactly_full_last_page_has_no_token(uow: SqlUnitOfWorkFactory) -> None:
    await add(uow, [make(f"e-{i}", T0 + timedelta(seconds=i)) for i in range(6)])
    assert await list_all(uow, NotificationQuery(), 3) == [
        ["e-5", "e-4", "e-3"],
        ["e-2", "e-1", "e-0"],
    ]


async def test_an_empty_result_is_one_empty_page(uow: SqlUnitOfWorkFactory) -> None:
    assert await list_all(uow, NotificationQuery(user_id="nobody"), 10) == [[]]


async def test_equal_creation_times_across_a_page_boundary(uow: SqlUnitOfWorkFactory) -> None:
    # Five at the very same microsecond, between an older and a newer one.
    same = T0 + timedelta(microseconds=123456)
    rows = [
        make("z-older", same - timedelta(microseconds=1)),
        *(make(f"z-same-{i}", same) for i in range(5)),
        make("z-newer", same + timedelta(microseconds=1)),
    ]
    await add(uow, rows)
    assert await list_all(uow, NotificationQuery(), 2) == [
        ["z-newer", "z-same-4"],
        ["z-same-3", "z-same-2"],
        ["z-same-1", "z-same-0"],
        ["z-older"],
    ]


async def test_a_token_with_other_filters_is_invalid_argument(
    uow: SqlUnitOfWorkFactory, dataset: list[Notification]
) -> None:
    listing = ListNotifications(uow)
    _, token = await listing.execute(ACME, NotificationQuery(category="mention"), 2, "")
    assert token
    for other in (
        NotificationQuery(),
        NotificationQuery(category="invoice_ready"),
        NotificationQuery(category="mention", user_id="user-1"),
        NotificationQuery(category="mention", created_before=T0 + timedelta(days=1)),
    ):
        with pytest.raises(ValidationFailed) as info:
            await listing.execute(ACME, other, 2, token)
        assert [v.field for v in info.value.violations] == ["page_token"]
    # The same filters with another page size are the same listing.
    page, _ = await listing.execute(ACME, NotificationQuery(category="mention"), 5, token)
    assert len(page) == 5


@pytest.mark.parametrize("token", ["garbage", "Zm9v", "eyJwIjoiYSIsInEiOiJiIn0=", "!!"])
async def test_a_garbage_token_is_invalid_argument(uow: SqlUnitOfWorkFactory, token: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        await ListNotifications(uow).execute(ACME, NotificationQuery(), 10, token)
    assert [v.field for v in info.value.violations] == ["page_token"]


# -- query plans with many rows -------------------------------------------------------------

BIG_TENANT = "big"
BIG_ROWS = 200_000
STATUSES = [s.value for s in Status]


async def fill_big_tenant(engine: AsyncEngine) -> None:
    """200k rows straight in SQL (through the aggregate it would take minutes), evenly spread
    over users, statuses, channels, categories, priorities and callers, 30 seconds apart."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                """
                INSERT INTO notifications (
                    id, tenant_id, caller_service, request_id, request_fingerprint, user_id,
                    channel, priority, category, title, body, template_name, template_version,
                    locale, status, status_reason, created_at, updated_at, due_at, metadata,
                    history, attempts, version)
                SELECT 'big-' || lpad(g::text, 7, '0'), :tenant, 'svc-' || (g % 5),
                       'req-' || g, 'fp', 'user-' || (g % 1000),
                       (ARRAY['EMAIL','SMS','PUSH','WEBHOOK','IN_APP'])[1 + (g / 3) % 5],
                       1 + (g / 7) % 4, 'cat-' || ((g / 11) % 20), 'title', 'body', '', 0, '',
                       (CAST(:statuses AS text[]))[1 + (g / 13) % 10], '', ts, ts, ts,
                       '{}'::jsonb, '[]'::jsonb, '[]'::jsonb, 1
                FROM generate_series(1, :rows) AS g,
                     LATERAL (SELECT CAST(:t0 AS timestamptz) + g * interval '30 seconds') AS x(ts)
                """
            ),
            {"tenant": BIG_TENANT, "rows": BIG_ROWS, "statuses": STATUSES, "t0": T0},
        )
        # A little of another tenant, so the tenant column is not a constant.
        await conn.execute(
            sa.text(
                """
                INSERT INTO notifications (
                    id, tenant_id, caller_service, request_id, request_fingerprint, user_id,
                    channel, priority, category, title, body, template_name, template_version,
                    locale, status, status_reason, created_at, updated_at, due_at, metadata,
                    history, attempts, version)
                SELECT 'small-' || g, 'small', 'svc', 'req-' || g, 'fp', 'user-1', 'EMAIL', 2,
                       'cat-1', 't', 'b', '', 0, '', 'SENT', '', now(), now(), now(),
                       '{}'::jsonb, '[]'::jsonb, '[]'::jsonb, 1
                FROM generate_series(1, 1000) AS g
                """
            )
        )
        await conn.execute(sa.text("ANALYZE notifications"))


@pytest.fixture
async def big(clean_db: AsyncEngine) -> AsyncEngine:
    await fill_big_tenant(clean_db)
    return clean_db


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


MIDDLE = T0 + timedelta(days=30)
# Row g was created at T0 + g * 30s: this is the row a day after MIDDLE.
CURSOR = PageCursor(MIDDLE + timedelta(days=1), f"big-{31 * 2880:07d}")
PLANNED: dict[str, NotificationQuery] = {
    "no filter": NotificationQuery(),
    "user": NotificationQuery(user_id="user-42"),
    "status": NotificationQuery(statuses=frozenset({Status.FAILED})),
    "two statuses": NotificationQuery(statuses=frozenset({Status.FAILED, Status.SENT})),
    "channel": NotificationQuery(channel=Channel.PUSH),
    "category": NotificationQuery(category="cat-7"),
    "priority": NotificationQuery(priority=Priority.HIGH),
    "caller": NotificationQuery(caller_service="svc-3"),
    "time range": NotificationQuery(created_from=MIDDLE, created_before=MIDDLE + timedelta(days=2)),
}
# The index that serves each single-column filter: (tenant_id, <column>, created_at, id). A
# filter scanned through the tenant's creation-time index pages without a sort too, but reads
# every row of the tenant between two matches: with a rare value, most of the table.
SERVED_BY: dict[str, str] = {
    "user": "ix_notifications_tenant_user_created",
    "status": "ix_notifications_tenant_status_created",
    "channel": "ix_notifications_tenant_channel_created",
    "category": "ix_notifications_tenant_category_created",
    "priority": "ix_notifications_tenant_priority_created",
    "caller": "ix_notifications_tenant_caller_created",
}


async def test_every_filter_pages_by_index_without_sorting(big: AsyncEngine) -> None:
    """The statement the repository really sends (captured), EXPLAINed with its parameters,
    for the first page and for a page after a cursor, with 200k rows in the tenant."""
    uow = SqlUnitOfWorkFactory(big)
    sent: list[tuple[str, Any]] = []

    def capture(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if "FROM notifications" in statement and "ORDER BY" in statement:
            sent.append((statement, parameters))

    sa.event.listen(big.sync_engine, "before_cursor_execute", capture)
    try:
        for query in PLANNED.values():
            for after in (None, CURSOR):
                async with uow() as u:
                    found = await u.notifications.list_page(BIG_TENANT, query, 101, after)
                assert found, "every planned query must find rows"
    finally:
        sa.event.remove(big.sync_engine, "before_cursor_execute", capture)
    assert len(sent) == 2 * len(PLANNED)

    failures: list[str] = []
    async with big.connect() as conn:
        for (name, _), (statement, parameters) in zip(
            [(n, a) for n in PLANNED for a in ("first page", "after a cursor")], sent, strict=True
        ):
            result = await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
            raw = result.scalar_one()
            plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
            indexes = {node.get("Index Name") for node in plan_nodes(plan)}
            if name in SERVED_BY and SERVED_BY[name] not in indexes:
                failures.append(f"{name}: not served by {SERVED_BY[name]} but by {indexes}")
            for node in plan_nodes(plan):
                kind = node["Node Type"]
                if kind in ("Sort", "Incremental Sort") or (
                    kind == "Seq Scan" and node.get("Relation Name") == "notifications"
                ):
                    failures.append(f"{name}: {kind}\n{json.dumps(plan, indent=1)[:3000]}")
    assert not failures, "\n\n".join(failures)


async def test_a_page_over_200k_rows_is_correct(big: AsyncEngine) -> None:
    uow = SqlUnitOfWorkFactory(big)
    listing = ListNotifications(uow)
    page, token = await listing.execute(Principal(BIG_TENANT, "x"), NotificationQuery(), 3, "")
    assert [n.id for n in page] == ["big-0200000", "big-0199999", "big-0199998"]
    page, _ = await listing.execute(Principal(BIG_TENANT, "x"), NotificationQuery(), 3, token)
    assert [n.id for n in page] == ["big-0199997", "big-0199996", "big-0199995"]
