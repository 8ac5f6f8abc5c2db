"""Notifications in Postgres, written with SQLAlchemy Core (one statement per save)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from application.errors import ConcurrentUpdate
from application.ports.notification_queries import (
    DeliveryStats,
    NotificationQuery,
    StatsQuery,
    StatsReport,
)
from application.ports.repositories import DeadLetterQuery, PageCursor, QueueEntry
from domain.errors import NotFound
from domain.notification import (
    PROVIDER_ACCEPTED,
    Channel,
    EngagementAction,
    Notification,
    Priority,
    Status,
)
from infrastructure.persistence.notification_rows import from_row, to_row
from infrastructure.persistence.row_batches import RowBatchInsert, any_of
from infrastructure.persistence.tables import notifications as t
from infrastructure.persistence.tables import request_aliases

IN_FLIGHT = (Status.QUEUED.value, Status.SENDING.value)
_ENTRY = (t.c.id, t.c.priority, t.c.due_at, t.c.status, t.c.updated_at)
_NOT_GOING_OUT = tuple(
    s.value for s in (Status.SUPPRESSED, Status.CANCELLED, Status.FAILED, Status.EXPIRED)
)
_NOT_COUNTED = tuple(s.value for s in (Status.SUPPRESSED, Status.CANCELLED, Status.EXPIRED))
# Caps are at most MAX_CAP a day; more due times than that cannot change a decision.
_MAX_COUNTED = 100_001
_IMMUTABLE = frozenset({"id", "tenant_id", "request_id", "created_at", "version"})

# Built once: constructing a 25-column UPDATE per save cost more CPU than running it.
_UPDATE = (
    sa.update(t)
    .where(t.c.id == sa.bindparam("row_id"), t.c.version == sa.bindparam("expected_version"))
    .values(
        {
            **{c.name: sa.bindparam(c.name, type_=c.type) for c in t.c if c.name not in _IMMUTABLE},
            # A cancel request joins the row without moving its version (see
            # record_cancel_request): a writer that loaded the row before it must keep it.
            "cancel_requested_at": sa.func.coalesce(
                t.c.cancel_requested_at,
                sa.bindparam("cancel_requested_at", type_=t.c.cancel_requested_at.type),
            ),
            "version": t.c.version + 1,
        }
    )
)


# Built once, like _UPDATE: a statement built per call with .values(row) spent more CPU on
# SQLAlchemy's cache key than on the insert. A request_id already taken inserts nothing.
_INSERT = (
    insert(t)
    .on_conflict_do_nothing(index_elements=[t.c.tenant_id, t.c.request_id])
    .returning(t.c.id)
)


# For this transaction only; the second statement puts back what RESET would.
_INDEX_ORDER_ONLY = sa.text(
    "SELECT set_config('enable_bitmapscan', 'off', true), set_config('enable_sort', 'off', true)"
)
_PLANNER_AS_CONFIGURED = sa.text(
    "SELECT set_config(name, reset_val, true) FROM pg_settings"
    " WHERE name IN ('enable_bitmapscan', 'enable_sort')"
)

_BY_REQUEST_IDS = sa.select(t).where(
    t.c.tenant_id == sa.bindparam("tenant_id"), any_of(t.c.request_id, "ids")
)
_ALIASES = sa.select(
    request_aliases.c.request_id,
    request_aliases.c.request_fingerprint,
    request_aliases.c.notification_id,
).where(
    request_aliases.c.tenant_id == sa.bindparam("tenant_id"),
    any_of(request_aliases.c.request_id, "ids"),
)

_INSERT_MANY = RowBatchInsert(t, "ON CONFLICT (tenant_id, request_id) DO NOTHING RETURNING id")


def _new_row(n: Notification) -> dict[str, Any]:
    return to_row(n) | {"version": 1}


class SqlNotificationRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def add(self, notification: Notification) -> bool:
        inserted = (await self._conn.execute(_INSERT, _new_row(notification))).scalar_one_or_none()
        if inserted is None:
            return False
        notification.version = 1
        return True

    async def add_many(self, notifications: Sequence[Notification]) -> set[str]:
        if not notifications:
            return set()
        result = await _INSERT_MANY.execute(self._conn, [_new_row(n) for n in notifications])
        inserted = {row[0] for row in result}
        for n in notifications:
            if n.id in inserted:
                n.version = 1
        return inserted

    async def get(self, tenant_id: str, notification_id: str) -> Notification:
        row = (
            (
                await self._conn.execute(
                    sa.select(t).where(t.c.id == notification_id, t.c.tenant_id == tenant_id)
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            raise NotFound("notification", notification_id)
        return from_row(row)

    async def get_for_delivery(self, notification_id: str) -> Notification | None:
        row = (
            (await self._conn.execute(sa.select(t).where(t.c.id == notification_id)))
            .mappings()
            .first()
        )
        return from_row(row) if row is not None else None

    async def get_for_delivery_many(
        self, notification_ids: Sequence[str]
    ) -> dict[str, Notification]:
        if not notification_ids:
            return {}
        rows = (
            (await self._conn.execute(_GET_MANY_FOR_DELIVERY, {"ids": list(notification_ids)}))
            .mappings()
            .all()
        )
        return {r["id"]: from_row(r) for r in rows}

    async def save_many(self, notifications: Sequence[Notification]) -> set[str]:
        if not notifications:
            return set()
        # In id order, as get_many(for_update=True) locks: on a large table the
        # rows are found (and locked) by index in the array's order, which keeps a deadlock
        # with such a writer unlikely; the caller survives one (its batch is retried).
        rows = [
            to_row(n) | {"version": n.version} for n in sorted(notifications, key=lambda n: n.id)
        ]
        if len({r["id"] for r in rows}) != len(rows):
            raise ValueError("save_many: one notification twice in a batch")
        written = set((await self._conn.execute(_SAVE_MANY, {"rows": rows})).scalars().all())
        for n in notifications:
            if n.id in written:
                n.version += 1
        return {n.id for n in notifications} - written

    async def get_by_request_id(self, tenant_id: str, request_id: str) -> Notification | None:
        row = (
            (
                await self._conn.execute(
                    sa.select(t).where(t.c.tenant_id == tenant_id, t.c.request_id == request_id)
                )
            )
            .mappings()
            .first()
        )
        return from_row(row) if row is not None else None

    async def get_by_request_ids(
        self, tenant_id: str, request_ids: Sequence[str]
    ) -> dict[str, Notification]:
        if not request_ids:
            return {}
        rows = (
            (
                await self._conn.execute(
                    _BY_REQUEST_IDS, {"tenant_id": tenant_id, "ids": request_ids}
                )
            )
            .mappings()
            .all()
        )
        return {row["request_id"]: from_row(row) for row in rows}

    async def get_many(
        self, tenant_id: str, ids: Sequence[str], *, for_update: bool = False
    ) -> list[Notification]:
        if not ids:
            return []
        query = (
            sa.select(t).where(t.c.tenant_id == tenant_id, t.c.id.in_(list(ids))).order_by(t.c.id)
        )
        if for_update:
            # Locked in id order: writers locking overlapping lists take turns.
            query = query.with_for_update()
        rows = (await self._conn.execute(query)).mappings().all()
        return [from_row(r) for r in rows]

    async def save(self, notification: Notification) -> None:
        values = to_row(notification)
        values["row_id"] = notification.id
        values["expected_version"] = notification.version
        result = await self._conn.execute(_UPDATE, values)
        if result.rowcount != 1:
            raise ConcurrentUpdate("notification", notification.id)
        notification.version += 1

    async def record_cancel_request(self, notification: Notification) -> None:
        if notification.cancel_requested_at is None:
            return
        await self._conn.execute(
            sa.update(t)
            .where(
                t.c.tenant_id == notification.tenant_id,
                t.c.id == notification.id,
                t.c.cancel_requested_at.is_(None),
            )
            .values(cancel_requested_at=notification.cancel_requested_at)
        )

    async def count_unread(self, tenant_id: str, user_id: str) -> int:
        stmt = sa.select(sa.func.count()).where(
            t.c.tenant_id == tenant_id,
            t.c.user_id == user_id,
            t.c.channel == Channel.IN_APP.value,
            t.c.status == Status.DELIVERED.value,
        )
        return int((await self._conn.execute(stmt)).scalar_one())

    async def in_flight(self, after_id: str, limit: int) -> list[QueueEntry]:
        # Walked along ix_notifications_in_flight in id order, stopping after `limit` rows.
        # Left to itself the planner trusts statistics from before a backlog (autoanalyze waits
        # for a tenth of a large table to change), expects a few in-flight rows, and picks a
        # bitmap scan and a sort: each batch then read the whole backlog, and the reconciler's
        # pass over 100,000 queued rows read ten million.
        await self._conn.execute(_INDEX_ORDER_ONLY)
        entries = await self._entries(
            sa.select(*_ENTRY)
            .where(t.c.status.in_(IN_FLIGHT), t.c.id > after_id)
            .order_by(t.c.id)
            .limit(limit)
        )
        # Not in a finally: after a failed SELECT the transaction is aborted, a further
        # statement would fail too and hide the first error (a lost connection must reach the
        # caller as such), and the settings end with the transaction anyway.
        await self._conn.execute(_PLANNER_AS_CONFIGURED)
        return entries

    async def in_flight_among(self, ids: Sequence[str]) -> list[QueueEntry]:
        if not ids:
            return []
        return await self._entries(
            sa.select(*_ENTRY).where(t.c.status.in_(IN_FLIGHT), t.c.id.in_(list(ids)))
        )

    async def _entries(self, stmt: sa.Select[Any]) -> list[QueueEntry]:
        rows = (await self._conn.execute(stmt)).all()
        return [
            QueueEntry(r.id, Priority(r.priority), r.due_at, Status(r.status), r.updated_at)
            for r in rows
        ]

    async def list_failed(
        self, tenant_id: str, query: DeadLetterQuery, limit: int, after: PageCursor | None
    ) -> list[Notification]:
        conditions = [t.c.tenant_id == tenant_id, t.c.status == Status.FAILED.value]
        if query.channel is not None:
            conditions.append(t.c.channel == query.channel.value)
        if query.category:
            conditions.append(t.c.category == query.category)
        if query.error_class:
            last_error = t.c.attempts.op("->")(sa.literal(-1)).op("->>")(sa.literal("error_class"))
            conditions.append(last_error == query.error_class)
        if query.failed_from is not None:
            conditions.append(t.c.updated_at >= query.failed_from)
        if query.failed_before is not None:
            conditions.append(t.c.updated_at < query.failed_before)
        if after is not None:
            conditions.append(sa.tuple_(t.c.updated_at, t.c.id) < sa.tuple_(after.at, after.id))
        stmt = (
            sa.select(t)
            .where(*conditions)
            .order_by(t.c.updated_at.desc(), t.c.id.desc())
            .limit(limit)
        )
        rows = (await self._conn.execute(stmt)).mappings().all()
        return [from_row(r) for r in rows]

    async def list_page(
        self, tenant_id: str, query: NotificationQuery, limit: int, after: PageCursor | None
    ) -> list[Notification]:
        # Each filter is an equality or a range on an indexed column, and the order matches
        # the (tenant_id, [filter], created_at, id) indexes: a page is an index range scan
        # read backwards, with no sort, however many rows the tenant has.
        conditions = [t.c.tenant_id == tenant_id]
        if query.user_id:
            conditions.append(t.c.user_id == query.user_id)
        if query.statuses:
            conditions.append(t.c.status.in_(sorted(s.value for s in query.statuses)))
        if query.channel is not None:
            conditions.append(t.c.channel == query.channel.value)
        if query.category:
            conditions.append(t.c.category == query.category)
        if query.priority is not None:
            conditions.append(t.c.priority == int(query.priority))
        if query.caller_service:
            conditions.append(t.c.caller_service == query.caller_service)
        if query.created_from is not None:
            conditions.append(t.c.created_at >= query.created_from)
        if query.created_before is not None:
            conditions.append(t.c.created_at < query.created_before)
        if after is not None:
            conditions.append(sa.tuple_(t.c.created_at, t.c.id) < sa.tuple_(after.at, after.id))
        stmt = (
            sa.select(t)
            .where(*conditions)
            .order_by(t.c.created_at.desc(), t.c.id.desc())
            .limit(limit)
        )
        rows = (await self._conn.execute(stmt)).mappings().all()
        return [from_row(r) for r in rows]

    async def stats(self, tenant_id: str, query: StatsQuery) -> StatsReport:
        rows = (await self._conn.execute(_stats_statement(tenant_id, query))).mappings().all()
        groups: list[DeliveryStats] = []
        total = DeliveryStats(None, "", "")
        for row in rows:
            if row["is_total"]:
                total = _stats_from_row(row, None, "", "")
            else:
                channel = Channel(row["channel"])
                groups.append(_stats_from_row(row, channel, row["provider"], row["category"]))
        return StatsReport(groups, total)

    # -- the policy step --------------------------------------------------------------------

    async def lock_recipient(self, tenant_id: str, user_id: str) -> None:
        await self._conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"recipient:{tenant_id}:{user_id}"},
        )

    async def find_duplicate(
        self, tenant_id: str, user_id: str, channel: Channel, content_hash: str, since: datetime
    ) -> Notification | None:
        stmt = (
            sa.select(t)
            .where(
                t.c.tenant_id == tenant_id,
                t.c.user_id == user_id,
                t.c.created_at > since,
                t.c.channel == channel.value,
                t.c.content_hash == content_hash,
                t.c.status.not_in(_NOT_GOING_OUT),
            )
            .order_by(t.c.created_at.desc())
            .limit(1)
        )
        row = (await self._conn.execute(stmt)).mappings().first()
        return from_row(row) if row is not None else None

    async def counted_due_times(
        self, tenant_id: str, user_id: str, category: str, since: datetime
    ) -> list[datetime]:
        stmt = (
            sa.select(t.c.due_at)
            .where(
                t.c.tenant_id == tenant_id,
                t.c.user_id == user_id,
                t.c.category == category,
                t.c.due_at > since,
                t.c.status.not_in(_NOT_COUNTED),
            )
            .order_by(t.c.due_at)
            .limit(_MAX_COUNTED)
        )
        return list((await self._conn.execute(stmt)).scalars().all())

    async def add_alias(
        self, tenant_id: str, request_id: str, fingerprint: str, notification_id: str, now: datetime
    ) -> bool:
        stmt = (
            insert(request_aliases)
            .values(
                tenant_id=tenant_id,
                request_id=request_id,
                request_fingerprint=fingerprint,
                notification_id=notification_id,
                created_at=now,
            )
            .on_conflict_do_nothing()
            .returning(request_aliases.c.request_id)
        )
        return (await self._conn.execute(stmt)).scalar_one_or_none() is not None

    async def get_alias(self, tenant_id: str, request_id: str) -> tuple[str, str] | None:
        row = (
            await self._conn.execute(
                sa.select(
                    request_aliases.c.request_fingerprint, request_aliases.c.notification_id
                ).where(
                    request_aliases.c.tenant_id == tenant_id,
                    request_aliases.c.request_id == request_id,
                )
            )
        ).first()
        return (row[0], row[1]) if row is not None else None

    async def get_aliases(
        self, tenant_id: str, request_ids: Sequence[str]
    ) -> dict[str, tuple[str, str]]:
        if not request_ids:
            return {}
        rows = await self._conn.execute(
            _ALIASES, {"tenant_id": tenant_id, "ids": list(request_ids)}
        )
        return {row[0]: (row[1], row[2]) for row in rows}

    async def ids_for_user(
        self, tenant_id: str, user_id: str, after_id: str, limit: int
    ) -> list[str]:
        stmt = (
            sa.select(t.c.id)
            .where(
                t.c.tenant_id == tenant_id,
                t.c.user_id == user_id,
                t.c.erased_at.is_(None),
                t.c.id > after_id,
            )
            .order_by(t.c.id)
            .limit(limit)
        )
        return list((await self._conn.execute(stmt)).scalars().all())


# -- statistics ----------------------------------------------------------------------------

_ACCEPTED = tuple(s.value for s in PROVIDER_ACCEPTED)
_PERCENTILES = (0.5, 0.95, 0.99)


def _stats_statement(tenant_id: str, query: StatsQuery) -> sa.Select[Any]:
    """One pass over the window (the tenant_created index) grouped by channel, provider and
    category, plus the total as a second grouping set of the same scan."""
    accepted = t.c.status.in_(_ACCEPTED)
    # Due at its schedule time, or at creation when it had none or one already past.
    due = sa.func.greatest(t.c.created_at, t.c.scheduled_at)
    latency_ms = sa.cast(sa.extract("epoch", t.c.sent_at - due) * 1000, sa.Float)
    opened = t.c.engagements.has_key(EngagementAction.OPENED.value)
    clicked = t.c.engagements.has_key(EngagementAction.CLICKED.value)
    provider = sa.func.coalesce(t.c.provider, sa.literal_column("''"))
    channel, category = t.c.channel, t.c.category
    conditions = [
        t.c.tenant_id == tenant_id,
        t.c.created_at >= query.start,
        t.c.created_at < query.end,
    ]
    if query.channel is not None:
        conditions.append(t.c.channel == query.channel.value)
    if query.category:
        conditions.append(t.c.category == query.category)

    def count_where(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return sa.func.count().filter(condition)

    return (
        sa.select(
            channel.label("channel"),
            provider.label("provider"),
            category.label("category"),
            sa.func.grouping(channel, provider, category).label("is_total"),
            *(count_where(t.c.status == s.value).label(s.value) for s in Status),
            sa.func.percentile_cont(sa.literal(list(_PERCENTILES), sa.ARRAY(sa.Float)))
            .within_group(latency_ms)
            .filter(accepted & t.c.sent_at.is_not(None))
            .label("latencies"),
            count_where(accepted & (opened | clicked | (t.c.status == Status.READ.value))).label(
                "opened"
            ),
            count_where(accepted & clicked).label("clicked"),
        )
        .where(*conditions)
        .group_by(sa.func.grouping_sets(sa.tuple_(channel, provider, category), sa.tuple_()))
        .order_by(sa.literal_column("is_total"), channel, provider, category)
    )


def _stats_from_row(
    row: sa.RowMapping, channel: Channel | None, provider: str, category: str
) -> DeliveryStats:
    latencies = row["latencies"] or [0.0] * len(_PERCENTILES)
    return DeliveryStats(
        channel=channel,
        provider=provider,
        category=category,
        status_counts={s: row[s.value] for s in Status if row[s.value]},
        latency_p50_ms=float(latencies[0] or 0.0),
        latency_p95_ms=float(latencies[1] or 0.0),
        latency_p99_ms=float(latencies[2] or 0.0),
        opened_count=row["opened"],
        clicked_count=row["clicked"],
    )


# -- delivery batches ------------------------------------------------------------------------

_GET_MANY_FOR_DELIVERY = sa.select(t).where(any_of(t.c.id, "ids"))
_MUTABLE = [c.name for c in t.c if c.name not in _IMMUTABLE and c.name != "cancel_requested_at"]
# save() for many rows in one statement: the rows travel as one JSON array read back as
# notifications records, and each row keeps its own compare-and-set on version; RETURNING
# names the rows written, so the caller knows which ones another writer had moved.
_SAVE_MANY = sa.text(
    "UPDATE notifications AS t SET "
    + ", ".join(f'"{name}" = r."{name}"' for name in _MUTABLE)
    # As in save(): a cancel request that joined the row meanwhile is kept.
    + ", cancel_requested_at = coalesce(t.cancel_requested_at, r.cancel_requested_at)"
    + ", version = t.version + 1"
    + " FROM jsonb_populate_recordset(NULL::notifications, :rows) AS r"
    + " WHERE t.id = r.id AND t.version = r.version RETURNING t.id"
).bindparams(sa.bindparam("rows", type_=JSONB))
