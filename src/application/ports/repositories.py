"""Persistence ports. Repositories never commit; the unit of work does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from domain.bulk_job import BulkJob
from domain.notification import Channel, Notification, Priority, Status


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """The little the reconciler needs to know about an unsettled notification."""

    id: str
    priority: Priority
    due_at: datetime
    status: Status
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class DeadLetterQuery:
    """Filters for listing FAILED notifications; None or empty means "any"."""

    channel: Channel | None = None
    category: str = ""
    error_class: str = ""
    failed_from: datetime | None = None
    failed_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class PageCursor:
    """Where the previous page ended (keyset pagination: stable under concurrent writes)."""

    at: datetime
    id: str


class NotificationRepository(Protocol):
    async def add(self, notification: Notification) -> bool:
        """Insert. False (nothing written) if the tenant already used its request_id."""
        ...

    async def add_many(self, notifications: Sequence[Notification]) -> set[str]:
        """Insert in one statement; returns the ids written (request_id conflicts are skipped)."""
        ...

    async def get(self, tenant_id: str, notification_id: str) -> Notification:
        """Load one of the tenant's notifications; NotFound otherwise."""
        ...

    async def get_for_delivery(self, notification_id: str) -> Notification | None:
        """Load by id alone (workers act for every tenant); None if it does not exist."""
        ...

    async def get_by_request_id(self, tenant_id: str, request_id: str) -> Notification | None: ...

    async def get_many(self, tenant_id: str, ids: Sequence[str]) -> list[Notification]:
        """The tenant's notifications among ``ids`` (missing and foreign ids are left out)."""
        ...

    async def save(self, notification: Notification) -> None:
        """Write changes; a compare-and-set on ``version`` (ConcurrentUpdate if it moved)."""
        ...

    async def count_unread(self, tenant_id: str, user_id: str) -> int: ...

    async def in_flight(self, after_id: str, limit: int) -> list[QueueEntry]:
        """QUEUED or SENDING notifications with id > after_id, by id: the reconciler's scan."""
        ...

    async def in_flight_among(self, ids: Sequence[str]) -> list[QueueEntry]:
        """Those of ``ids`` that are QUEUED or SENDING now."""
        ...

    async def list_failed(
        self, tenant_id: str, query: DeadLetterQuery, limit: int, after: PageCursor | None
    ) -> list[Notification]:
        """FAILED notifications, most recently failed first."""
        ...


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    key_id: str
    tenant_id: str
    service: str
    revoked: bool


class ApiKeyRepository(Protocol):
    async def find_by_hash(self, key_hash: bytes) -> ApiKeyRecord | None: ...

    async def add(self, record: ApiKeyRecord, key_hash: bytes, now: datetime) -> None: ...


@dataclass(frozen=True, slots=True)
class Tenant:
    tenant_id: str
    webhook_secret: str


class TenantRepository(Protocol):
    async def get(self, tenant_id: str) -> Tenant | None: ...

    async def add(self, tenant: Tenant, now: datetime) -> None: ...


@dataclass(frozen=True, slots=True)
class TemplateVersion:
    """One stored version of a template's content for one locale ('' is the default)."""

    tenant_id: str
    name: str
    version: int
    locale: str
    title: str
    body: str


class TemplateRepository(Protocol):
    async def latest(self, tenant_id: str, name: str) -> list[TemplateVersion]:
        """Every locale of the newest version of the template (empty if unknown)."""
        ...

    async def put(self, template: TemplateVersion, now: datetime) -> TemplateVersion:
        """Store as a new version (the version field is assigned here)."""
        ...


class BulkJobRepository(Protocol):
    async def add(self, job: BulkJob) -> bool:
        """Insert. False (nothing written) if the tenant already used its request_id."""
        ...

    async def get_by_request_id(self, tenant_id: str, request_id: str) -> BulkJob | None: ...

    async def save(self, job: BulkJob) -> None: ...


class UnitOfWork(Protocol):
    notifications: NotificationRepository
    bulk_jobs: BulkJobRepository
    api_keys: ApiKeyRepository
    tenants: TenantRepository
    templates: TemplateRepository

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Roll back anything not committed."""
        ...

    async def commit(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> UnitOfWork: ...
