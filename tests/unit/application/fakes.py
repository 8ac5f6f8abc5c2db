"""In-memory fakes for the application's ports, faithful enough to catch use-case bugs.

The repositories behave like the Postgres ones where it matters to a use case:
- every load returns a copy, so mutating an aggregate changes nothing until it is saved;
- writes are held in the unit of work and reach the database only on commit (rollback otherwise);
- (tenant, request_id) is unique for notifications and bulk jobs (add returns False);
- save is a compare-and-set on ``version`` and raises ConcurrentUpdate when it moved; a cancel
  request recorded meanwhile (record_cancel_request: no version check, no new version) stays.
"""

from __future__ import annotations

import copy
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

from application.errors import ConcurrentUpdate, Unavailable
from application.ports.leadership import Hold
from application.ports.notification_queries import NotificationQuery, StatsQuery, StatsReport
from application.ports.repositories import (
    ApiKeyRecord,
    ApiKeyRepository,
    BulkJobCall,
    BulkJobRecipientView,
    BulkJobRepository,
    CategoryRepository,
    DeadLetterQuery,
    InboxEvent,
    InboxEventKind,
    InboxEventRepository,
    NotificationRepository,
    PageCursor,
    QueueEntry,
    RecipientRepository,
    Suppression,
    SuppressionRepository,
    TemplateRepository,
    Tenant,
    TenantRepository,
)
from application.ports.scheduler import Claim, PriorityStats, QueueItem, QueueStats
from application.ports.sender import Delivered, DeliveryFailed
from application.use_cases.preparation import NotificationPreparer
from domain.bulk_job import BulkJob, BulkJobProgress, BulkJobRecipient
from domain.errors import FieldViolation, NotFound, ValidationFailed
from domain.notification import (
    CANCELLABLE,
    UNSENT,
    Address,
    Channel,
    Content,
    DeliveryResult,
    ErrorClass,
    NewNotification,
    Notification,
    Priority,
    Rendered,
    Status,
    TemplateRef,
)
from domain.policy import Category
from domain.recipient import Recipient
from domain.template import Template, TemplateVersion
from tests.unit.application import fake_record

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


# -- clock and ids ---------------------------------------------------------------------------


class FixedClock:
    def __init__(self, now: datetime = T0) -> None:
        if now.tzinfo is None:
            raise ValueError("FixedClock needs a timezone-aware time")
        self._now = now

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        self._now += delta
        return self._now

    def set(self, now: datetime) -> None:
        self._now = now


class SequentialIds:
    def __init__(self, prefix: str = "id-") -> None:
        self._prefix = prefix
        self.issued = 0

    def new_id(self) -> str:
        self.issued += 1
        return f"{self._prefix}{self.issued:06d}"


class FakeMonotonic:
    """A time.monotonic stand-in for caches with a TTL."""

    def __init__(self, start: float = 1000.0) -> None:
        self.value = start

    def __call__(self) -> float:
        return self.value


# -- the database ----------------------------------------------------------------------------


# A template and its versions by number.
_TemplateRow = tuple[Template, dict[int, TemplateVersion]]


@dataclass
class FakeDatabase:
    """Committed state, shared by every unit of work made by one factory."""

    notifications: dict[str, Notification] = field(default_factory=dict)
    # Keyed by (tenant, job id), (tenant, request_id) and (tenant, job id, position).
    bulk_jobs: dict[tuple[str, str], BulkJob] = field(default_factory=dict)
    bulk_job_calls: dict[tuple[str, str], BulkJobCall] = field(default_factory=dict)
    bulk_job_recipients: dict[tuple[str, str, int], BulkJobRecipient] = field(default_factory=dict)
    api_keys: dict[bytes, ApiKeyRecord] = field(default_factory=dict)
    tenants: dict[str, Tenant] = field(default_factory=dict)
    templates: dict[tuple[str, str], _TemplateRow] = field(default_factory=dict)
    recipients: dict[tuple[str, str], Recipient] = field(default_factory=dict)
    categories: dict[tuple[str, str], Category] = field(default_factory=dict)
    aliases: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    suppressions: dict[tuple[str, str, str], Suppression] = field(default_factory=dict)
    # (tenant, user) -> that user's inbox events, oldest first.
    inbox: dict[tuple[str, str], list[InboxEvent]] = field(default_factory=dict)
    # (tenant, user) of every recipient lock taken, in order.
    recipient_locks: list[tuple[str, str]] = field(default_factory=list)
    # The ids of every notification loaded for update, in order.
    notification_locks: list[str] = field(default_factory=list)
    commits: int = 0
    rollbacks: int = 0
    api_key_lookups: int = 0
    # The next this-many commits fail as if Postgres were unreachable.
    unavailable_commits: int = 0

    def insert(self, *notifications: Notification) -> None:
        """Seed committed rows directly (as a fixture would), version 1."""
        for n in notifications:
            n.version = max(n.version, 1)
            self.notifications[n.id] = copy.deepcopy(n)

    def row(self, notification_id: str) -> Notification:
        """A copy of the committed row."""
        return copy.deepcopy(self.notifications[notification_id])

    def touch(self, notification_id: str) -> None:
        """Another writer committed a change to the row: its version moved on."""
        self.notifications[notification_id].version += 1


K = TypeVar("K")
V = TypeVar("V")


class _Overlay(Generic[K, V]):
    """Reads see this unit of work's own pending writes over the committed rows."""

    def __init__(self, committed: dict[K, V]) -> None:
        self._committed = committed
        self.pending: dict[K, V | None] = {}  # None: deleted in this unit of work

    def _visible(self) -> dict[K, V]:
        merged = {**self._committed, **self.pending}
        return {k: v for k, v in merged.items() if v is not None}

    def get(self, key: K) -> V | None:
        value = self.pending[key] if key in self.pending else self._committed.get(key)
        return copy.deepcopy(value)

    def find(self, predicate: Callable[[V], bool]) -> list[V]:
        """Copies of the visible rows that match (rows are only copied once they match)."""
        return [copy.deepcopy(v) for v in self._visible().values() if predicate(v)]

    def count(self, predicate: Callable[[V], bool]) -> int:
        return sum(1 for v in self._visible().values() if predicate(v))

    def exists(self, predicate: Callable[[V], bool]) -> bool:
        return any(predicate(v) for v in self._visible().values())

    def visible_keys(self) -> list[K]:
        return list(self._visible())

    def __contains__(self, key: K) -> bool:
        return key in self._visible()

    def put(self, key: K, value: V) -> None:
        self.pending[key] = copy.deepcopy(value)

    def delete(self, key: K) -> None:
        self.pending[key] = None

    def flush(self) -> None:
        for key, value in self.pending.items():
            if value is None:
                self._committed.pop(key, None)
            else:
                self._committed[key] = value
        self.pending.clear()


class _Flushable(Protocol):
    def flush(self) -> None: ...

    def has_pending(self) -> bool: ...

    def discard(self) -> None: ...


class _OverlayBacked(Generic[K, V]):
    _rows: _Overlay[K, V]

    def flush(self) -> None:
        self._rows.flush()

    def has_pending(self) -> bool:
        return bool(self._rows.pending)

    def discard(self) -> None:
        self._rows.pending.clear()


class FakeNotificationRepository(_OverlayBacked[str, Notification]):
    def __init__(self, db: FakeDatabase) -> None:
        self._rows = _Overlay(db.notifications)
        self._aliases = _Overlay(db.aliases)
        self._locks = db.recipient_locks
        self._notification_locks = db.notification_locks

    async def add(self, notification: Notification) -> bool:
        key = (notification.tenant_id, notification.request_id)
        if notification.id in self._rows or self._rows.exists(
            lambda r: (r.tenant_id, r.request_id) == key
        ):
            return False
        notification.version = 1
        self._rows.put(notification.id, notification)
        return True

    async def add_many(self, notifications: Sequence[Notification]) -> set[str]:
        return {n.id for n in notifications if await self.add(n)}

    async def get(self, tenant_id: str, notification_id: str) -> Notification:
        row = self._rows.get(notification_id)
        if row is None or row.tenant_id != tenant_id:
            raise NotFound("notification", notification_id)
        return row

    async def get_for_delivery(self, notification_id: str) -> Notification | None:
        return self._rows.get(notification_id)

    async def get_for_delivery_many(
        self, notification_ids: Sequence[str]
    ) -> dict[str, Notification]:
        found = {i: self._rows.get(i) for i in notification_ids}
        return {i: n for i, n in found.items() if n is not None}

    async def save_many(self, notifications: Sequence[Notification]) -> set[str]:
        assert len({n.id for n in notifications}) == len(notifications), "ids must be distinct"
        superseded = set()
        for n in notifications:
            try:
                await self.save(n)
            except ConcurrentUpdate:
                superseded.add(n.id)
        return superseded

    async def get_by_request_id(self, tenant_id: str, request_id: str) -> Notification | None:
        found = self._rows.find(lambda r: (r.tenant_id, r.request_id) == (tenant_id, request_id))
        return found[0] if found else None

    async def get_by_request_ids(
        self, tenant_id: str, request_ids: Sequence[str]
    ) -> dict[str, Notification]:
        found = {}
        for request_id in request_ids:
            n = await self.get_by_request_id(tenant_id, request_id)
            if n is not None:
                found[request_id] = n
        return found

    async def get_many(
        self, tenant_id: str, ids: Sequence[str], *, for_update: bool = False
    ) -> list[Notification]:
        wanted = set(ids)
        rows = sorted(
            self._rows.find(lambda r: r.id in wanted and r.tenant_id == tenant_id),
            key=lambda r: r.id,
        )
        if for_update:
            self._notification_locks.extend(r.id for r in rows)
        return rows

    async def save(self, notification: Notification) -> None:
        current = self._rows.get(notification.id)
        if current is None or current.version != notification.version:
            raise ConcurrentUpdate("notification", notification.id)
        notification.version += 1
        stored = notification
        if notification.cancel_requested_at is None and current.cancel_requested_at is not None:
            stored = replace(notification, cancel_requested_at=current.cancel_requested_at)
        self._rows.put(notification.id, stored)

    async def record_cancel_request(self, notification: Notification) -> None:
        current = self._rows.get(notification.id)
        if (
            current is None
            or current.tenant_id != notification.tenant_id
            or notification.cancel_requested_at is None
            or current.cancel_requested_at is not None
        ):
            return
        current.cancel_requested_at = notification.cancel_requested_at
        self._rows.put(notification.id, current)

    async def count_unread(self, tenant_id: str, user_id: str) -> int:
        return self._rows.count(
            lambda r: (r.tenant_id, r.user_id) == (tenant_id, user_id) and r.unread
        )

    async def lock_recipient(self, tenant_id: str, user_id: str) -> None:
        self._locks.append((tenant_id, user_id))

    async def find_duplicate(
        self, tenant_id: str, user_id: str, channel: Channel, content_hash: str, since: datetime
    ) -> Notification | None:
        gone = {Status.SUPPRESSED, Status.CANCELLED, Status.FAILED, Status.EXPIRED}
        found = self._rows.find(
            lambda r: (
                (r.tenant_id, r.user_id, r.channel, r.content_hash)
                == (tenant_id, user_id, channel, content_hash)
                and r.created_at > since
                and r.status not in gone
            )
        )
        return max(found, key=lambda r: r.created_at) if found else None

    async def counted_due_times(
        self, tenant_id: str, user_id: str, category: str, since: datetime
    ) -> list[datetime]:
        gone = {Status.SUPPRESSED, Status.CANCELLED, Status.EXPIRED}
        found = self._rows.find(
            lambda r: (
                (r.tenant_id, r.user_id, r.category) == (tenant_id, user_id, category)
                and r.due_at > since
                and r.status not in gone
            )
        )
        return sorted(r.due_at for r in found)

    async def add_alias(
        self, tenant_id: str, request_id: str, fingerprint: str, notification_id: str, now: datetime
    ) -> bool:
        if (tenant_id, request_id) in self._aliases:
            return False
        self._aliases.put((tenant_id, request_id), (fingerprint, notification_id))
        return True

    async def get_alias(self, tenant_id: str, request_id: str) -> tuple[str, str] | None:
        return self._aliases.get((tenant_id, request_id))

    async def get_aliases(
        self, tenant_id: str, request_ids: Sequence[str]
    ) -> dict[str, tuple[str, str]]:
        found = {}
        for request_id in request_ids:
            alias = self._aliases.get((tenant_id, request_id))
            if alias is not None:
                found[request_id] = alias
        return found

    async def ids_for_user(
        self, tenant_id: str, user_id: str, after_id: str, limit: int
    ) -> list[str]:
        found = self._rows.find(
            lambda r: (
                (r.tenant_id, r.user_id) == (tenant_id, user_id)
                and r.erased_at is None
                and r.id > after_id
            )
        )
        return sorted(r.id for r in found)[:limit]

    def flush(self) -> None:
        super().flush()
        self._aliases.flush()

    def has_pending(self) -> bool:
        return super().has_pending() or bool(self._aliases.pending)

    def discard(self) -> None:
        super().discard()
        self._aliases.pending.clear()

    async def in_flight(self, after_id: str, limit: int) -> list[QueueEntry]:
        rows = self._rows.find(
            lambda r: r.status in (Status.QUEUED, Status.SENDING) and r.id > after_id
        )
        return [
            QueueEntry(r.id, r.priority, r.due_at, r.status, r.updated_at)
            for r in sorted(rows, key=lambda r: r.id)[:limit]
        ]

    async def in_flight_among(self, ids: Sequence[str]) -> list[QueueEntry]:
        wanted = set(ids)
        return [
            e
            for e in await self.in_flight("", len(self._rows.find(lambda r: True)) + 1)
            if e.id in wanted
        ]

    async def list_failed(
        self, tenant_id: str, query: DeadLetterQuery, limit: int, after: PageCursor | None
    ) -> list[Notification]:
        def matches(r: Notification) -> bool:
            last_error = r.attempts[-1].error_class.value if r.attempts else ""
            return (
                r.tenant_id == tenant_id
                and r.status is Status.FAILED
                and (query.channel is None or r.channel is query.channel)
                and (not query.category or r.category == query.category)
                and (not query.error_class or last_error == query.error_class)
                and (query.failed_from is None or r.updated_at >= query.failed_from)
                and (query.failed_before is None or r.updated_at < query.failed_before)
                and (after is None or (r.updated_at, r.id) < (after.at, after.id))
            )

        rows = sorted(self._rows.find(matches), key=lambda r: (r.updated_at, r.id), reverse=True)
        return rows[:limit]

    async def list_page(
        self, tenant_id: str, query: NotificationQuery, limit: int, after: PageCursor | None
    ) -> list[Notification]:
        found = self._rows.find(lambda r: fake_record.matches(r, tenant_id, query, after))
        return fake_record.newest_first(found, limit)

    async def stats(self, tenant_id: str, query: StatsQuery) -> StatsReport:
        return fake_record.report(
            self._rows.find(lambda r: fake_record.in_window(r, tenant_id, query))
        )


class FakeBulkJobRepository(_OverlayBacked[tuple[str, str], BulkJob]):
    """Progress and listings read the notifications this unit of work sees."""

    def __init__(self, db: FakeDatabase, notifications: FakeNotificationRepository) -> None:
        self._rows = _Overlay(db.bulk_jobs)
        self._calls = _Overlay(db.bulk_job_calls)
        self._recipients = _Overlay(db.bulk_job_recipients)
        self._notifications = notifications

    async def get(self, tenant_id: str, job_id: str, *, for_update: bool = False) -> BulkJob | None:
        return self._rows.get((tenant_id, job_id))

    async def add(self, job: BulkJob) -> bool:
        key = (job.tenant_id, job.request_id)
        if (job.tenant_id, job.id) in self._rows or self._rows.exists(
            lambda j: (j.tenant_id, j.request_id) == key
        ):
            return False
        self._rows.put((job.tenant_id, job.id), job)
        return True

    async def save(self, job: BulkJob) -> None:
        if (job.tenant_id, job.id) not in self._rows:
            raise NotFound("bulk job", job.id)
        self._rows.put((job.tenant_id, job.id), job)

    async def get_call(self, tenant_id: str, request_id: str) -> BulkJobCall | None:
        return self._calls.get((tenant_id, request_id))

    async def add_call(self, call: BulkJobCall) -> bool:
        if (call.tenant_id, call.request_id) in self._calls:
            return False
        self._calls.put((call.tenant_id, call.request_id), call)
        return True

    async def add_recipients(
        self, tenant_id: str, job_id: str, recipients: Sequence[BulkJobRecipient]
    ) -> None:
        for r in recipients:
            key = (tenant_id, job_id, r.position)
            assert key not in self._recipients, f"position {r.position} written twice"
            self._recipients.put(key, r)

    def _job_recipients(self, tenant_id: str, job_id: str) -> list[BulkJobRecipient]:
        keys = sorted(k for k in self._recipients.visible_keys() if k[:2] == (tenant_id, job_id))
        return [r for k in keys if (r := self._recipients.get(k)) is not None]

    async def _statuses(
        self, tenant_id: str, rows: Sequence[BulkJobRecipient]
    ) -> dict[str, Notification]:
        ids = [r.notification_id for r in rows if r.notification_id]
        return {n.id: n for n in await self._notifications.get_many(tenant_id, ids)}

    async def recipients(
        self, tenant_id: str, job_id: str, after_position: int, limit: int
    ) -> list[BulkJobRecipientView]:
        rows = [r for r in self._job_recipients(tenant_id, job_id) if r.position > after_position]
        rows = rows[:limit]
        found = await self._statuses(tenant_id, rows)
        views = []
        for r in rows:
            n = found.get(r.notification_id or "")
            views.append(
                BulkJobRecipientView(r, n.status, n.status_reason)
                if n is not None
                else BulkJobRecipientView(r)
            )
        return views

    async def progress(self, tenant_id: str, job_id: str) -> BulkJobProgress:
        rows = self._job_recipients(tenant_id, job_id)
        found = await self._statuses(tenant_id, rows)
        statuses: dict[Status, int] = {}
        refused = 0
        for r in rows:
            n = found.get(r.notification_id or "")
            if n is None:
                refused += 1
            else:
                statuses[n.status] = statuses.get(n.status, 0) + 1
        return BulkJobProgress.of(statuses, refused)

    async def unsent_notification_ids(
        self, tenant_id: str, job_id: str, after_id: str, limit: int
    ) -> list[str]:
        found = self._notifications._rows.find(
            lambda n: (
                (n.tenant_id, n.bulk_job_id) == (tenant_id, job_id)
                and (
                    n.status in CANCELLABLE
                    or (n.status in UNSENT and n.cancel_requested_at is None)
                )
                and n.id > after_id
            )
        )
        return sorted(n.id for n in found)[:limit]

    def flush(self) -> None:
        super().flush()
        self._calls.flush()
        self._recipients.flush()

    def has_pending(self) -> bool:
        return super().has_pending() or bool(self._calls.pending or self._recipients.pending)

    def discard(self) -> None:
        super().discard()
        self._calls.pending.clear()
        self._recipients.pending.clear()


class FakeApiKeyRepository(_OverlayBacked[bytes, ApiKeyRecord]):
    def __init__(self, db: FakeDatabase) -> None:
        self._db = db
        self._rows = _Overlay(db.api_keys)

    async def find_by_hash(self, key_hash: bytes) -> ApiKeyRecord | None:
        self._db.api_key_lookups += 1
        return self._rows.get(key_hash)

    async def add(self, record: ApiKeyRecord, key_hash: bytes, now: datetime) -> None:
        if key_hash in self._rows:
            raise ValueError("duplicate key hash")
        self._rows.put(key_hash, record)


class FakeTenantRepository(_OverlayBacked[str, Tenant]):
    def __init__(self, db: FakeDatabase) -> None:
        self._rows = _Overlay(db.tenants)

    async def get(self, tenant_id: str, *, for_update: bool = False) -> Tenant | None:
        return self._rows.get(tenant_id)

    async def add(self, tenant: Tenant, now: datetime) -> None:
        if tenant.tenant_id not in self._rows:
            self._rows.put(tenant.tenant_id, tenant)

    async def save_secrets(self, tenant: Tenant) -> None:
        if tenant.tenant_id in self._rows:
            self._rows.put(tenant.tenant_id, tenant)


class FakeTemplateRepository(_OverlayBacked[tuple[str, str], _TemplateRow]):
    """Rows are (template, its versions by number). ``save`` is a compare-and-set on
    ``row_version``, as in Postgres."""

    def __init__(self, db: FakeDatabase) -> None:
        self._rows = _Overlay(db.templates)

    async def get(self, tenant_id: str, name: str, *, for_update: bool = False) -> Template | None:
        row = self._rows.get((tenant_id, name))
        return row[0] if row is not None else None

    async def get_version(self, tenant_id: str, name: str, version: int) -> TemplateVersion | None:
        row = self._rows.get((tenant_id, name))
        return row[1].get(version) if row is not None else None

    async def get_active(
        self, tenant_id: str, name: str
    ) -> tuple[Template, TemplateVersion | None] | None:
        row = self._rows.get((tenant_id, name))
        if row is None:
            return None
        template, versions = row
        active = template.active_version
        return template, versions.get(active) if active is not None else None

    async def list(self, tenant_id: str, after_name: str, limit: int) -> list[Template]:
        names = sorted(
            n for (t, n) in self._rows.visible_keys() if t == tenant_id and n > after_name
        )
        return [row[0] for n in names[:limit] if (row := self._rows.get((tenant_id, n)))]

    async def add(self, template: Template) -> bool:
        if (template.tenant_id, template.name) in self._rows:
            return False
        template.row_version = 1
        self._store(template, {})
        return True

    async def save(self, template: Template) -> None:
        row = self._rows.get((template.tenant_id, template.name))
        if row is None or row[0].row_version != template.row_version:
            raise ConcurrentUpdate("template", template.name)
        template.row_version += 1
        self._store(template, row[1])

    def _store(self, template: Template, versions: dict[int, TemplateVersion]) -> None:
        for number, state in template.pending_state_changes().items():
            versions[number] = replace(versions[number], state=state)
        versions.update({v.version: v for v in template.pending_versions()})
        template.mark_saved()
        self._rows.put((template.tenant_id, template.name), (template, versions))


class FakeRecipientRepository(_OverlayBacked[tuple[str, str], Recipient]):
    def __init__(self, db: FakeDatabase) -> None:
        self._rows = _Overlay(db.recipients)

    async def get(self, tenant_id: str, user_id: str) -> Recipient | None:
        row = self._rows.get((tenant_id, user_id))
        return copy.deepcopy(row) if row is not None else None

    async def get_many(self, tenant_id: str, user_ids: Sequence[str]) -> dict[str, Recipient]:
        found = {u: await self.get(tenant_id, u) for u in set(user_ids)}
        return {u: r for u, r in found.items() if r is not None}

    async def save(self, recipient: Recipient) -> None:
        key = (recipient.tenant_id, recipient.user_id)
        current = self._rows.get(key)
        if (current.version if current is not None else 0) != recipient.version:
            raise ConcurrentUpdate("recipient", recipient.user_id)
        recipient.version += 1
        self._rows.put(key, copy.deepcopy(recipient))

    async def delete(self, tenant_id: str, user_id: str) -> bool:
        if self._rows.get((tenant_id, user_id)) is None:
            return False
        self._rows.delete((tenant_id, user_id))
        return True


class FakeCategoryRepository(_OverlayBacked[tuple[str, str], Category]):
    def __init__(self, db: FakeDatabase) -> None:
        self._rows = _Overlay(db.categories)

    async def get(self, tenant_id: str, name: str) -> Category | None:
        return self._rows.get((tenant_id, name))

    async def put(self, tenant_id: str, category: Category) -> None:
        self._rows.put((tenant_id, category.name), category)

    async def list(self, tenant_id: str, after_name: str, limit: int) -> list[Category]:
        names = sorted(
            n for (t, n) in self._rows.visible_keys() if t == tenant_id and n > after_name
        )
        return [c for n in names[:limit] if (c := self._rows.get((tenant_id, n))) is not None]


class FakeSuppressionRepository(_OverlayBacked[tuple[str, str, str], Suppression]):
    def __init__(self, db: FakeDatabase) -> None:
        self._rows = _Overlay(db.suppressions)

    async def add(self, suppression: Suppression) -> None:
        key = (suppression.tenant_id, suppression.address.kind, suppression.address.value)
        if self._rows.get(key) is None:
            self._rows.put(key, suppression)

    async def find(self, tenant_id: str, address: Address) -> Suppression | None:
        return self._rows.get((tenant_id, address.kind, address.value))


class FakeInboxEventRepository(_OverlayBacked[tuple[str, str], list[InboxEvent]]):
    """Unread counts come from the notifications this unit of work sees."""

    def __init__(self, db: FakeDatabase, notifications: FakeNotificationRepository) -> None:
        self._rows = _Overlay(db.inbox)
        self._notifications = notifications

    async def append(
        self,
        tenant_id: str,
        user_id: str,
        kind: InboxEventKind,
        now: datetime,
        *,
        notification_id: str = "",
        read_ids: Sequence[str] = (),
    ) -> InboxEvent:
        events = list(self._rows.get((tenant_id, user_id)) or [])
        event = InboxEvent(
            seq=events[-1].seq + 1 if events else 1,
            kind=kind,
            unread_count=await self._notifications.count_unread(tenant_id, user_id),
            created_at=now,
            notification_id=notification_id,
            read_ids=tuple(read_ids),
        )
        self._rows.put((tenant_id, user_id), [*events, event])
        return event

    async def after(self, tenant_id: str, user_id: str, seq: int, limit: int) -> list[InboxEvent]:
        events = self._rows.get((tenant_id, user_id)) or []
        return [e for e in events if e.seq > seq][:limit]

    async def head(self, tenant_id: str, user_id: str) -> tuple[int, int]:
        events = self._rows.get((tenant_id, user_id)) or []
        return (events[-1].seq, events[0].seq) if events else (0, 0)

    async def prune(self, before: datetime, limit: int) -> int:
        pruned = 0
        for key in self._rows.visible_keys():
            events = self._rows.get(key) or []
            kept = []
            for i, event in enumerate(events):
                if i < len(events) - 1 and event.created_at < before and pruned < limit:
                    pruned += 1
                else:
                    kept.append(event)
            if len(kept) != len(events):
                self._rows.put(key, kept)
        return pruned


class FakeUnitOfWork:
    notifications: NotificationRepository
    bulk_jobs: BulkJobRepository
    api_keys: ApiKeyRepository
    tenants: TenantRepository
    templates: TemplateRepository
    recipients: RecipientRepository
    categories: CategoryRepository
    suppressions: SuppressionRepository
    inbox: InboxEventRepository

    def __init__(self, db: FakeDatabase) -> None:
        self._db = db
        self._fakes: tuple[_Flushable, ...] = (
            notifications := FakeNotificationRepository(db),
            bulk_jobs := FakeBulkJobRepository(db, notifications),
            api_keys := FakeApiKeyRepository(db),
            tenants := FakeTenantRepository(db),
            templates := FakeTemplateRepository(db),
            recipients := FakeRecipientRepository(db),
            categories := FakeCategoryRepository(db),
            suppressions := FakeSuppressionRepository(db),
            inbox := FakeInboxEventRepository(db, notifications),
        )
        self.notifications = notifications
        self.bulk_jobs = bulk_jobs
        self.api_keys = api_keys
        self.tenants = tenants
        self.templates = templates
        self.recipients = recipients
        self.categories = categories
        self.suppressions = suppressions
        self.inbox = inbox
        self.state = "new"

    async def __aenter__(self) -> Self:
        assert self.state == "new", "a unit of work is used once"
        self.state = "open"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if any(repo.has_pending() for repo in self._fakes):
            self._db.rollbacks += 1
        for repo in self._fakes:
            repo.discard()
        self.state = "closed"

    async def commit(self) -> None:
        assert self.state == "open", "commit outside the unit of work"
        if self._db.unavailable_commits > 0:
            self._db.unavailable_commits -= 1
            raise Unavailable("postgres", "connection refused")
        for repo in self._fakes:
            repo.flush()
        self._db.commits += 1


class FakeUnitOfWorkFactory:
    def __init__(self, db: FakeDatabase | None = None) -> None:
        self.db = db if db is not None else FakeDatabase()
        self.opened = 0

    def __call__(self) -> FakeUnitOfWork:
        self.opened += 1
        return FakeUnitOfWork(self.db)


# -- the scheduler ---------------------------------------------------------------------------


class FakeScheduler:
    """Waiting items and leases in dicts, with every call recorded."""

    def __init__(self) -> None:
        self.waiting: dict[str, QueueItem] = {}
        self.leased: dict[str, Claim] = {}
        self.enqueued: list[QueueItem] = []
        self.acked: list[Claim] = []
        self.retried: list[tuple[Claim, datetime]] = []
        self.removed: list[str] = []
        self.calls: list[str] = []
        self.run = "run-1"
        self._token = 0

    async def enqueue(self, items: Sequence[QueueItem], now: datetime) -> None:
        self.calls.append("enqueue")
        for item in items:
            self.enqueued.append(item)
            if item.notification_id not in self.leased:
                self.waiting[item.notification_id] = item

    async def claim(self, limit: int, now: datetime, lease: timedelta) -> list[Claim]:
        self.calls.append("claim")
        due = sorted(
            (i for i in self.waiting.values() if i.due_at <= now),
            key=lambda i: (-i.priority, i.due_at),
        )[:limit]
        claims = []
        for item in due:
            self._token += 1
            claim = Claim(item.notification_id, item.priority, self._token, now + lease)
            del self.waiting[item.notification_id]
            self.leased[item.notification_id] = claim
            claims.append(claim)
        return claims

    def _release(self, claim: Claim) -> bool:
        held = self.leased.get(claim.notification_id)
        if held is None or held.token != claim.token:
            return False
        del self.leased[claim.notification_id]
        return True

    async def ack(self, claim: Claim) -> bool:
        self.calls.append("ack")
        self.acked.append(claim)
        return self._release(claim)

    async def retry_at(self, claim: Claim, due_at: datetime, now: datetime) -> bool:
        self.calls.append("retry_at")
        self.retried.append((claim, due_at))
        if not self._release(claim):
            return False
        self.waiting[claim.notification_id] = QueueItem(
            claim.notification_id, claim.priority, due_at
        )
        return True

    async def extend(self, claim: Claim, now: datetime, lease: timedelta) -> bool:
        self.calls.append("extend")
        held = self.leased.get(claim.notification_id)
        if held is None or held.token != claim.token:
            return False
        self.leased[claim.notification_id] = replace(held, lease_deadline=now + lease)
        return True

    async def remove(self, notification_id: str) -> None:
        self.calls.append("remove")
        self.removed.append(notification_id)
        self.waiting.pop(notification_id, None)

    async def recover_expired_leases(self, now: datetime, limit: int) -> int:
        self.calls.append("recover_expired_leases")
        expired = [c for c in self.leased.values() if c.lease_deadline <= now][:limit]
        for c in expired:
            del self.leased[c.notification_id]
            self.waiting[c.notification_id] = QueueItem(c.notification_id, c.priority, now)
        return len(expired)

    async def contains_many(self, notification_ids: Sequence[str]) -> list[bool]:
        self.calls.append("contains_many")
        return [i in self.waiting or i in self.leased for i in notification_ids]

    async def run_id(self) -> str:
        return self.run

    async def stats(self, now: datetime) -> QueueStats:
        self.calls.append("stats")
        by_priority = {}
        for p in Priority:
            waiting = [i for i in self.waiting.values() if i.priority == p]
            due = [i.due_at for i in waiting if i.due_at <= now]
            by_priority[p] = PriorityStats(
                ready=len(due),
                delayed=len(waiting) - len(due),
                leased=sum(1 for c in self.leased.values() if c.priority == p),
                oldest_due_age=now - min(due) if due else timedelta(0),
            )
        return QueueStats(by_priority)

    def lose_everything(self) -> None:
        """What a Redis restart without persistence does: empty sets, a new run_id."""
        self.waiting.clear()
        self.leased.clear()
        self.run = f"run-{int(self.run.split('-')[1]) + 1}"


class FakeLeadership:
    """Roles with their holder and the end of their term, read on ``clock``. ``as_holder``
    gives another process's view of the same roles, as two workers share one Redis."""

    def __init__(
        self,
        clock: FixedClock,
        holder: str = "worker-1",
        roles: dict[str, tuple[str, datetime]] | None = None,
    ) -> None:
        self.clock = clock
        self.holder = holder
        self.roles: dict[str, tuple[str, datetime]] = {} if roles is None else roles

    def as_holder(self, holder: str) -> FakeLeadership:
        return FakeLeadership(self.clock, holder, self.roles)

    async def hold(self, role: str, term: timedelta) -> Hold:
        now = self.clock.now()
        held = self.roles.get(role)
        live = held if held is not None and held[1] > now else None
        if live is not None and live[0] != self.holder:
            return Hold.REFUSED
        self.roles[role] = (self.holder, now + term)
        return Hold.TAKEN if live is None else Hold.KEPT

    async def resign(self, role: str) -> None:
        held = self.roles.get(role)
        if held is not None and held[0] == self.holder:
            del self.roles[role]


# -- senders and templates -------------------------------------------------------------------

Outcome = DeliveryResult | Delivered | BaseException


class FakeSender:
    """Plays back outcomes in order (the last one repeats); raises the exceptions among them."""

    def __init__(
        self,
        channel: Channel,
        *outcomes: Outcome,
        on_send: Callable[[Notification], None] | None = None,
    ) -> None:
        self.channel = channel
        self._outcomes: list[Outcome] = list(outcomes) or [DeliveryResult("fake")]
        self._on_send = on_send
        self.sent: list[Notification] = []

    async def send(self, notification: Notification) -> Delivered:
        self.sent.append(copy.deepcopy(notification))
        if self._on_send is not None:
            self._on_send(notification)
        outcome = self._outcomes.pop(0) if len(self._outcomes) > 1 else self._outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome if isinstance(outcome, Delivered) else Delivered(outcome)


def failure(
    error_class: ErrorClass,
    message: str = "boom",
    *,
    provider: str = "fake",
    retry_after: timedelta | None = None,
) -> DeliveryFailed:
    return DeliveryFailed(error_class, message, provider=provider, retry_after=retry_after)


class FakeRenderer:
    """Templates are ``str.format`` sources keyed by (tenant, name); version 1, any locale."""

    def __init__(self, templates: Mapping[tuple[str, str], tuple[str, str]] | None = None) -> None:
        self.templates = dict(templates or {})
        self.rendered: list[tuple[str, TemplateRef, Channel]] = []

    async def render(self, tenant_id: str, ref: TemplateRef, channel: Channel) -> Rendered:
        self.rendered.append((tenant_id, ref, channel))
        source = self.templates.get((tenant_id, ref.name))
        if source is None:
            raise ValidationFailed.single("template.name", f"no template named {ref.name!r}")
        missing = sorted(
            {
                name
                for text in source
                for _, name, _, _ in string.Formatter().parse(text)
                if name and name not in ref.variables
            }
        )
        if missing:
            raise ValidationFailed(
                [
                    FieldViolation(f"template.variables.{m}", "required by the template")
                    for m in missing
                ]
            )
        title, body = (text.format_map(dict(ref.variables)) for text in source)
        return Rendered(Content(title, body), ref.name, 1, ref.locale)

    def check_source(self, title: str, body: str) -> None:
        for name, text in (("title", title), ("body", body)):
            try:
                list(string.Formatter().parse(text))
            except ValueError as error:
                raise ValidationFailed.single(name, str(error)) from error


# -- a whole world of fakes, and notifications to put in it -----------------------------------

ALL_BUT_SMS = frozenset({Channel.EMAIL, Channel.PUSH, Channel.WEBHOOK, Channel.IN_APP})


@dataclass
class World:
    uow: FakeUnitOfWorkFactory
    clock: FixedClock
    ids: SequentialIds
    scheduler: FakeScheduler
    renderer: FakeRenderer
    preparer: NotificationPreparer

    @property
    def db(self) -> FakeDatabase:
        return self.uow.db


def make_world(channels: frozenset[Channel] = ALL_BUT_SMS) -> World:
    ids = SequentialIds()
    renderer = FakeRenderer()
    return World(
        uow=FakeUnitOfWorkFactory(),
        clock=FixedClock(),
        ids=ids,
        scheduler=FakeScheduler(),
        renderer=renderer,
        preparer=NotificationPreparer(renderer, ids, channels),
    )


def make_notification(
    id: str,
    *,
    tenant_id: str = "tenant-a",
    user_id: str = "user-1",
    channel: Channel = Channel.IN_APP,
    now: datetime = T0,
    request_id: str | None = None,
) -> Notification:
    address = {
        Channel.EMAIL: Address("email", "user@example.com"),
        Channel.WEBHOOK: Address("webhook_url", "https://example.com/hook"),
    }.get(channel)
    return Notification.accept(
        NewNotification(
            request_id=request_id or f"req-{id}",
            user_id=user_id,
            channel=channel,
            priority=Priority.MEDIUM,
            category="test",
            content=Content("title", "body"),
            address=address,
        ),
        id=id,
        tenant_id=tenant_id,
        caller="tests",
        fingerprint=f"fp-{id}",
        now=now,
    )


def delivered(id: str, **kw: Any) -> Notification:
    """A notification the provider accepted and (for IN_APP) delivered to the inbox."""
    n = make_notification(id, **kw)
    n.begin_attempt(n.updated_at)
    n.record_success(n.updated_at, DeliveryResult("inbox", id, delivered=True))
    return n
