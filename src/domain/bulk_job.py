"""A bulk job: one message sent to many recipients, over one or more BulkSend calls."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from domain.errors import PreconditionFailed, ValidationFailed
from domain.notification import Channel, Status

MAX_BULK_RECIPIENTS = 1000
MAX_JOB_ID_CHARS = 63
_JOB_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_JOB_ID_CHARS}}}")


def check_job_id(job_id: str) -> None:
    """A job id a caller may choose (and the server's own ids, which fit the same shape)."""
    if not job_id:
        raise ValidationFailed.single("job_id", "required")
    if not _JOB_ID.fullmatch(job_id):
        raise ValidationFailed.single(
            "job_id", f"1-{MAX_JOB_ID_CHARS} characters: letters, digits, '-' and '_' only"
        )


class BulkJobState(enum.StrEnum):
    # Stored: RUNNING until cancelled. COMPLETED is never stored; it follows from progress.
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why one recipient got no notification: a gRPC code name, the field, and a description."""

    code: str
    field: str
    description: str


@dataclass(frozen=True, slots=True)
class BulkJobRecipient:
    """What became of one recipient of a job: a notification (maybe an earlier one with the same
    content, ``deduplicated``), or a refusal."""

    position: int
    request_id: str
    call_index: int
    user_id: str
    notification_id: str | None = None
    deduplicated: bool = False
    refusal: Refusal | None = None


_QUEUED = frozenset({Status.PENDING, Status.QUEUED, Status.SENDING})
_DELIVERED = frozenset({Status.DELIVERED, Status.READ})
_FAILED = frozenset({Status.FAILED, Status.EXPIRED})


@dataclass(frozen=True, slots=True)
class BulkJobProgress:
    """Where a job's recipients stand now. Every recipient is refused or accepted; every
    accepted one is in exactly one of the status buckets."""

    refused: int = 0
    suppressed: int = 0
    queued: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    cancelled: int = 0

    @classmethod
    def of(cls, statuses: Mapping[Status, int], refused: int) -> BulkJobProgress:
        """From how many recipients' notifications are in each status."""

        def among(wanted: frozenset[Status]) -> int:
            return sum(n for s, n in statuses.items() if s in wanted)

        return cls(
            refused=refused,
            suppressed=statuses.get(Status.SUPPRESSED, 0),
            queued=among(_QUEUED),
            sent=statuses.get(Status.SENT, 0),
            delivered=among(_DELIVERED),
            failed=among(_FAILED),
            cancelled=statuses.get(Status.CANCELLED, 0),
        )

    @property
    def accepted(self) -> int:
        return (
            self.suppressed
            + self.queued
            + self.sent
            + self.delivered
            + self.failed
            + self.cancelled
        )

    @property
    def settled(self) -> bool:
        """No notification of the job is still waiting or sending."""
        return self.queued == 0


@dataclass
class BulkJob:
    id: str
    tenant_id: str
    caller: str
    # The call that created the job (every call is recorded apart, with its own request_id).
    request_id: str
    request_fingerprint: str
    # None only for jobs stored before jobs had a channel and whose recipients were all refused.
    channel: Channel | None
    category: str
    # Recipients named over all calls: also the position of the next call's first recipient.
    recipient_count: int
    accepted_count: int
    created_at: datetime
    updated_at: datetime
    call_count: int = 1
    state: BulkJobState = BulkJobState.RUNNING
    cancelled_at: datetime | None = None

    @classmethod
    def start(
        cls,
        *,
        id: str,
        tenant_id: str,
        caller: str,
        request_id: str,
        request_fingerprint: str,
        channel: Channel,
        category: str,
        count: int,
        now: datetime,
    ) -> BulkJob:
        """A new job with the ``count`` recipients of its first call (positions from 0)."""
        _check_count(count)
        return cls(
            id=id,
            tenant_id=tenant_id,
            caller=caller,
            request_id=request_id,
            request_fingerprint=request_fingerprint,
            channel=channel,
            category=category,
            recipient_count=count,
            accepted_count=0,
            created_at=now,
            updated_at=now,
        )

    @property
    def cancelled(self) -> bool:
        return self.state is BulkJobState.CANCELLED

    def extend(self, channel: Channel, category: str, count: int, now: datetime) -> int:
        """Add a call's ``count`` recipients; returns the position of the first of them."""
        _check_count(count)
        if self.cancelled:
            raise PreconditionFailed(
                "job_id",
                f"bulk job {self.id!r} was cancelled; it takes no more recipients",
                reason="BULK_JOB_CANCELLED",
            )
        if self.channel is not None and channel is not self.channel:
            raise PreconditionFailed(
                "channel",
                f"bulk job {self.id!r} sends on {self.channel}, not {channel}",
                reason="BULK_JOB_MISMATCH",
            )
        if category != self.category:
            raise PreconditionFailed(
                "category",
                f"bulk job {self.id!r} has category {self.category!r}, not {category!r}",
                reason="BULK_JOB_MISMATCH",
            )
        first = self.recipient_count
        self.channel = channel
        self.recipient_count += count
        self.call_count += 1
        self.updated_at = now
        return first

    def count_accepted(self, accepted: int) -> None:
        """Recipients of the latest call that got a notification."""
        if accepted < 0:
            raise ValueError("a negative number of recipients")
        self.accepted_count += accepted

    def cancel(self, now: datetime) -> bool:
        """Refuse further recipients from now on. False if it was cancelled already."""
        if self.cancelled:
            return False
        self.state = BulkJobState.CANCELLED
        self.cancelled_at = now
        self.updated_at = now
        return True

    def current_state(self, progress: BulkJobProgress) -> BulkJobState:
        if self.cancelled:
            return BulkJobState.CANCELLED
        return BulkJobState.COMPLETED if progress.settled else BulkJobState.RUNNING


def _check_count(count: int) -> None:
    if not 1 <= count <= MAX_BULK_RECIPIENTS:
        raise ValidationFailed.single(
            "recipients", f"{count} recipients; 1 to {MAX_BULK_RECIPIENTS} per call"
        )
