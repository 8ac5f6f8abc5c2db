"""Persistence ports. Repositories never commit; the unit of work does."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from types import TracebackType
from typing import Protocol, Self

from application.ports.notification_queries import NotificationQuery, StatsQuery, StatsReport
from domain.bulk_job import BulkJob, BulkJobProgress, BulkJobRecipient
from domain.notification import Address, Channel, Notification, Priority, Status
from domain.policy import Category
from domain.recipient import Recipient
from domain.template import Template, TemplateVersion


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

    async def get_for_delivery_many(
        self, notification_ids: Sequence[str]
    ) -> dict[str, Notification]:
        """get_for_delivery for many ids in one query, by id (missing ids are left out)."""
        ...

    async def save_many(self, notifications: Sequence[Notification]) -> set[str]:
        """save() for distinct notifications in one statement, each with its own
        compare-and-set on ``version``: returns the ids whose version had moved (nothing
        written for them, their ``version`` untouched); the others' versions move on."""
        ...

    async def get_by_request_id(self, tenant_id: str, request_id: str) -> Notification | None: ...

    async def get_by_request_ids(
        self, tenant_id: str, request_ids: Sequence[str]
    ) -> dict[str, Notification]:
        """The tenant's notifications stored under any of ``request_ids``, by request_id."""
        ...

    async def get_many(
        self, tenant_id: str, ids: Sequence[str], *, for_update: bool = False
    ) -> list[Notification]:
        """The tenant's notifications among ``ids`` in id order (missing and foreign ids are
        left out). ``for_update`` locks them until the transaction ends; a reader that changes
        nothing must not, or it can deadlock with a worker writing the same rows."""
        ...

    async def save(self, notification: Notification) -> None:
        """Write changes; a compare-and-set on ``version`` (ConcurrentUpdate if it moved). A
        recorded cancel request is kept even if ``notification`` was loaded before it."""
        ...

    async def record_cancel_request(self, notification: Notification) -> None:
        """Write ``notification.cancel_requested_at`` (if the row has none yet) and nothing
        else, with no version check and without moving the version: the worker holding it
        must still be able to record the outcome of its attempt."""
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

    async def list_page(
        self, tenant_id: str, query: NotificationQuery, limit: int, after: PageCursor | None
    ) -> list[Notification]:
        """Up to ``limit`` of the tenant's notifications matching ``query``, newest first by
        (created_at, id), those before ``after`` when given."""
        ...

    async def stats(self, tenant_id: str, query: StatsQuery) -> StatsReport:
        """Figures per (channel, provider, category) and in total for the notifications
        created in the query's window."""
        ...

    # -- the policy step --------------------------------------------------------------------

    async def lock_recipient(self, tenant_id: str, user_id: str) -> None:
        """Serialise, until the transaction ends, accepts for one recipient: caps and duplicate
        checks then see every notification accepted before them."""
        ...

    async def find_duplicate(
        self, tenant_id: str, user_id: str, channel: Channel, content_hash: str, since: datetime
    ) -> Notification | None:
        """The newest notification created after ``since`` with this content to this recipient
        on this channel that is going out or went out (not suppressed, cancelled, failed or
        expired)."""
        ...

    async def counted_due_times(
        self, tenant_id: str, user_id: str, category: str, since: datetime
    ) -> list[datetime]:
        """Due times after ``since`` of the recipient's notifications of ``category`` that
        count against frequency caps (all but suppressed, cancelled and expired)."""
        ...

    async def add_alias(
        self, tenant_id: str, request_id: str, fingerprint: str, notification_id: str, now: datetime
    ) -> bool:
        """Bind a request folded into an earlier notification. False if the request_id is bound."""
        ...

    async def get_alias(self, tenant_id: str, request_id: str) -> tuple[str, str] | None:
        """(request fingerprint, notification id) of a folded request, if ``request_id`` is one."""
        ...

    async def get_aliases(
        self, tenant_id: str, request_ids: Sequence[str]
    ) -> dict[str, tuple[str, str]]:
        """``get_alias`` for many request_ids at once: only the folded ones, by request_id."""
        ...

    async def ids_for_user(
        self, tenant_id: str, user_id: str, after_id: str, limit: int
    ) -> list[str]:
        """Ids of the recipient's notifications not yet erased, by id, after ``after_id``."""
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
    # After a rotation the old secret keeps signing, as a second signature, until this time:
    # receivers switch to the new one without a window in which deliveries fail to verify.
    previous_webhook_secret: str = ""
    previous_secret_expires_at: datetime | None = None

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets that sign a webhook sent at ``now``: the current one first."""
        until = self.previous_secret_expires_at
        if self.previous_webhook_secret and until is not None and now < until:
            return [self.webhook_secret, self.previous_webhook_secret]
        return [self.webhook_secret]

    def with_rotated_secret(self, secret: str, now: datetime, overlap: timedelta) -> Tenant:
        """``secret`` becomes current; the current one signs too for ``overlap`` (zero drops it
        at once, as after a leak). A previous secret still in force is dropped."""
        return replace(
            self,
            webhook_secret=secret,
            previous_webhook_secret=self.webhook_secret,
            previous_secret_expires_at=now + overlap,
        )


class TenantRepository(Protocol):
    async def get(self, tenant_id: str, *, for_update: bool = False) -> Tenant | None:
        """``for_update`` locks the row until the transaction ends (rotations take turns)."""
        ...

    async def add(self, tenant: Tenant, now: datetime) -> None: ...

    async def save_secrets(self, tenant: Tenant) -> None:
        """Write the tenant's current and previous webhook secrets."""
        ...


class TemplateRepository(Protocol):
    async def get(self, tenant_id: str, name: str, *, for_update: bool = False) -> Template | None:
        """The template without its versions. ``for_update`` locks the row until the
        transaction ends, so concurrent writers take turns (no two make the same version)."""
        ...

    async def get_version(
        self, tenant_id: str, name: str, version: int
    ) -> TemplateVersion | None: ...

    async def get_active(
        self, tenant_id: str, name: str
    ) -> tuple[Template, TemplateVersion | None] | None:
        """The template and its active version (None when none is active), in one read."""
        ...

    async def list(self, tenant_id: str, after_name: str, limit: int) -> list[Template]:
        """By name, those after ``after_name``."""
        ...

    async def add(self, template: Template) -> bool:
        """Insert with its new versions. False (nothing written) if the name is taken."""
        ...

    async def save(self, template: Template) -> None:
        """Write changes and new versions; a compare-and-set on ``row_version``
        (ConcurrentUpdate if it moved)."""
        ...


class RecipientRepository(Protocol):
    async def get(self, tenant_id: str, user_id: str) -> Recipient | None: ...

    async def get_many(self, tenant_id: str, user_ids: Sequence[str]) -> dict[str, Recipient]:
        """The recipients among ``user_ids`` that exist, by user id."""
        ...

    async def save(self, recipient: Recipient) -> None:
        """Insert (version 0) or update with a compare-and-set on ``version`` (ConcurrentUpdate
        if it moved); the version is bumped on the aggregate."""
        ...

    async def delete(self, tenant_id: str, user_id: str) -> bool: ...


class CategoryRepository(Protocol):
    async def get(self, tenant_id: str, name: str) -> Category | None: ...

    async def put(self, tenant_id: str, category: Category) -> None:
        """Create or replace."""
        ...

    async def list(self, tenant_id: str, after_name: str, limit: int) -> list[Category]:
        """By name, those after ``after_name``."""
        ...


@dataclass(frozen=True, slots=True)
class BulkJobCall:
    """One BulkSend call: its request_id, what it asked (fingerprint), and where its
    recipients are in the job (positions first_position .. first_position + count - 1)."""

    tenant_id: str
    request_id: str
    job_id: str
    request_fingerprint: str
    first_position: int
    count: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class BulkJobRecipientView:
    """A recipient of a job with the current status of their notification (None if refused)."""

    recipient: BulkJobRecipient
    status: Status | None = None
    status_reason: str = ""


class BulkJobRepository(Protocol):
    async def get(self, tenant_id: str, job_id: str, *, for_update: bool = False) -> BulkJob | None:
        """``for_update`` locks the row until the transaction ends: calls extending the job
        take turns, so each gets its own positions."""
        ...

    async def add(self, job: BulkJob) -> bool:
        """Insert. False (nothing written) if the tenant has a job with its id, or one created
        with its request_id."""
        ...

    async def save(self, job: BulkJob) -> None: ...

    async def get_call(self, tenant_id: str, request_id: str) -> BulkJobCall | None: ...

    async def add_call(self, call: BulkJobCall) -> bool:
        """Record a call. False (nothing written) if the tenant already used its request_id."""
        ...

    async def add_recipients(
        self, tenant_id: str, job_id: str, recipients: Sequence[BulkJobRecipient]
    ) -> None:
        """Record what became of a call's recipients (one write for all)."""
        ...

    async def recipients(
        self, tenant_id: str, job_id: str, after_position: int, limit: int
    ) -> list[BulkJobRecipientView]:
        """By position, those after ``after_position`` (-1 for the first)."""
        ...

    async def progress(self, tenant_id: str, job_id: str) -> BulkJobProgress:
        """How many recipients were refused, and how many notifications are in each status."""
        ...

    async def unsent_notification_ids(
        self, tenant_id: str, job_id: str, after_id: str, limit: int
    ) -> list[str]:
        """Ids of the job's notifications a cancel still has to reach, by id, after
        ``after_id``: those not handed to a provider yet (CANCELLABLE), and those being sent
        or dead-lettered (the rest of UNSENT) whose cancel was not requested yet."""
        ...


@dataclass(frozen=True, slots=True)
class Suppression:
    """An address a provider told us must not be sent to again (e.g. an SMS number that
    replied STOP): later sends to it are SUPPRESSED at accept time."""

    tenant_id: str
    address: Address
    reason: str
    created_at: datetime


class SuppressionRepository(Protocol):
    async def add(self, suppression: Suppression) -> None:
        """Record it; an address already suppressed keeps its first record."""
        ...

    async def find(self, tenant_id: str, address: Address) -> Suppression | None: ...


class InboxEventKind(enum.StrEnum):
    UNREAD_COUNT = "UNREAD_COUNT"
    NOTIFICATION_DELIVERED = "NOTIFICATION_DELIVERED"
    NOTIFICATIONS_READ = "NOTIFICATIONS_READ"


@dataclass(frozen=True, slots=True)
class InboxEvent:
    """One change to a user's in-app inbox. ``seq`` rises by one per event of that user and
    is assigned in commit order, so "every event after seq N" has no gap and no repeat."""

    seq: int
    kind: InboxEventKind
    unread_count: int
    created_at: datetime
    notification_id: str = ""
    read_ids: tuple[str, ...] = ()


class InboxEventRepository(Protocol):
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
        """Append an event in this transaction, with the unread count as this transaction
        sees it. Takes the user's inbox lock until commit (that is what orders the seqs)."""
        ...

    async def after(self, tenant_id: str, user_id: str, seq: int, limit: int) -> list[InboxEvent]:
        """Events with a seq above ``seq``, oldest first."""
        ...

    async def head(self, tenant_id: str, user_id: str) -> tuple[int, int]:
        """(the last seq, the oldest seq still kept); (0, 0) for a user with no events."""
        ...

    async def prune(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` events created before ``before``, of every user, and say how
        many. Each user's latest event is kept, so ``head`` still knows where the log stands."""
        ...


class UnitOfWork(Protocol):
    notifications: NotificationRepository
    bulk_jobs: BulkJobRepository
    api_keys: ApiKeyRepository
    tenants: TenantRepository
    templates: TemplateRepository
    recipients: RecipientRepository
    categories: CategoryRepository
    suppressions: SuppressionRepository
    inbox: InboxEventRepository

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
