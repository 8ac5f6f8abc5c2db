"""The bulk job aggregate: growing by calls, cancelling, and the state its progress implies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.bulk_job import (
    BulkJob,
    BulkJobProgress,
    BulkJobState,
    check_job_id,
)
from domain.errors import PreconditionFailed, ValidationFailed
from domain.notification import Channel, Status

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def job(count: int = 10) -> BulkJob:
    return BulkJob.start(
        id="spring-sale",
        tenant_id="acme",
        caller="marketing",
        request_id="call-1",
        request_fingerprint="fp",
        channel=Channel.EMAIL,
        category="promo",
        count=count,
        now=T0,
    )


def test_a_new_job_holds_its_first_call() -> None:
    j = job(10)
    assert (j.recipient_count, j.call_count, j.accepted_count) == (10, 1, 0)
    assert j.state is BulkJobState.RUNNING
    assert j.created_at == j.updated_at == T0
    assert j.cancelled_at is None


def test_extending_returns_the_next_free_position_each_time() -> None:
    j = job(10)
    later = T0 + timedelta(minutes=5)
    assert j.extend(Channel.EMAIL, "promo", 1000, later) == 10
    assert j.extend(Channel.EMAIL, "promo", 3, later) == 1010
    assert (j.recipient_count, j.call_count, j.updated_at) == (1013, 3, later)
    assert j.created_at == T0


@pytest.mark.parametrize("count", [0, 1001])
def test_a_call_adds_1_to_1000_recipients(count: int) -> None:
    j = job()
    with pytest.raises(ValidationFailed) as info:
        j.extend(Channel.EMAIL, "promo", count, T0)
    assert info.value.violations[0].field == "recipients"
    assert j.recipient_count == 10


def test_extending_with_another_channel_or_category_names_the_field() -> None:
    j = job()
    with pytest.raises(PreconditionFailed) as info:
        j.extend(Channel.SMS, "promo", 1, T0)
    assert (info.value.subject, info.value.reason) == ("channel", "BULK_JOB_MISMATCH")
    with pytest.raises(PreconditionFailed) as info:
        j.extend(Channel.EMAIL, "receipts", 1, T0)
    assert (info.value.subject, info.value.reason) == ("category", "BULK_JOB_MISMATCH")
    assert (j.recipient_count, j.call_count) == (10, 1)


def test_a_job_stored_without_a_channel_takes_the_first_one_it_is_extended_with() -> None:
    j = job()
    j.channel = None
    assert j.extend(Channel.PUSH, "promo", 2, T0) == 10
    assert j.channel is Channel.PUSH


def test_cancel_is_once_and_then_refuses_extensions() -> None:
    j = job()
    at = T0 + timedelta(hours=1)
    assert j.cancel(at) is True
    assert (j.state, j.cancelled_at, j.updated_at) == (BulkJobState.CANCELLED, at, at)
    assert j.cancel(at + timedelta(hours=1)) is False
    assert j.cancelled_at == at
    with pytest.raises(PreconditionFailed) as info:
        j.extend(Channel.EMAIL, "promo", 1, at)
    assert info.value.reason == "BULK_JOB_CANCELLED"
    assert j.recipient_count == 10


def test_count_accepted_adds_up_over_calls() -> None:
    j = job()
    j.count_accepted(7)
    j.count_accepted(0)
    j.count_accepted(3)
    assert j.accepted_count == 10
    with pytest.raises(ValueError, match="negative"):
        j.count_accepted(-1)


def test_progress_buckets_every_status_once() -> None:
    counts = {s: i + 1 for i, s in enumerate(Status)}
    progress = BulkJobProgress.of(counts, refused=100)
    assert progress.suppressed == counts[Status.SUPPRESSED]
    assert (
        progress.queued == counts[Status.PENDING] + counts[Status.QUEUED] + counts[Status.SENDING]
    )
    assert progress.sent == counts[Status.SENT]
    assert progress.delivered == counts[Status.DELIVERED] + counts[Status.READ]
    assert progress.failed == counts[Status.FAILED] + counts[Status.EXPIRED]
    assert progress.cancelled == counts[Status.CANCELLED]
    assert progress.accepted == sum(counts.values())
    assert progress.refused == 100


def test_state_is_running_until_nothing_waits_or_sends_then_completed() -> None:
    j = job()
    assert j.current_state(BulkJobProgress.of({Status.SENDING: 1, Status.SENT: 9}, 0)) is (
        BulkJobState.RUNNING
    )
    assert j.current_state(BulkJobProgress.of({Status.PENDING: 1}, 0)) is BulkJobState.RUNNING
    settled = BulkJobProgress.of({Status.SENT: 5, Status.FAILED: 2, Status.SUPPRESSED: 1}, 2)
    assert j.current_state(settled) is BulkJobState.COMPLETED
    # All refused: nothing to wait for.
    assert j.current_state(BulkJobProgress(refused=10)) is BulkJobState.COMPLETED
    j.cancel(T0)
    assert j.current_state(BulkJobProgress.of({Status.SENDING: 1}, 0)) is BulkJobState.CANCELLED


@pytest.mark.parametrize("job_id", ["a", "A-b_9", "x" * 63, "0190f5b2-7c1e-7d3a-9a4b-2f5d8c9e1a2b"])
def test_job_ids_callers_may_choose(job_id: str) -> None:
    check_job_id(job_id)


@pytest.mark.parametrize("job_id", ["", "x" * 64, "has space", "slash/no", "dot.no", "é", "a\n"])
def test_job_ids_refused_name_the_field(job_id: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        check_job_id(job_id)
    assert [v.field for v in info.value.violations] == ["job_id"]
