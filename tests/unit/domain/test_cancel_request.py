"""request_cancel: a cancel that reaches a notification wherever it is before it was sent. One
not handed to a provider yet is cancelled at once; one being sent, or a dead letter, keeps the
request, and then is never tried again (a success still ends SENT: it went out)."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest

from domain.errors import IllegalTransition, PreconditionFailed
from domain.notification import (
    CANCELLABLE,
    UNSENT,
    Address,
    AttemptOutcome,
    Channel,
    Content,
    DeliveryResult,
    ErrorClass,
    RetryPolicy,
    Route,
    Status,
)
from tests.unit.domain.notification_builders import STEP, T0, accepted, fail, in_status

S = Status
LATER = T0 + timedelta(minutes=1)


def test_the_status_sets_say_what_a_cancel_reaches() -> None:
    assert {S.PENDING, S.QUEUED} == CANCELLABLE
    assert {S.PENDING, S.QUEUED, S.SENDING, S.FAILED} == UNSENT


@pytest.mark.parametrize("status", [S.PENDING, S.QUEUED])
def test_one_not_handed_to_a_provider_is_cancelled_at_once(status: Status) -> None:
    n = in_status(status)
    assert n.request_cancel(LATER) is True
    assert n.status is S.CANCELLED
    assert n.status_reason == "cancelled by caller"
    assert n.history[-1].at == LATER


def test_one_being_sent_keeps_the_request_and_is_not_retried_after_a_transient_failure() -> None:
    n = in_status(S.SENDING)
    history = list(n.history)
    assert n.request_cancel(LATER) is False
    assert (n.status, n.history, n.cancel_requested_at) == (S.SENDING, history, LATER)

    failed_at = LATER + STEP
    fail(n, failed_at, ErrorClass.TRANSIENT, RetryPolicy())

    assert n.status is S.CANCELLED
    assert "cancel" in n.status_reason
    assert "boom" in n.status_reason
    [attempt] = n.attempts
    assert (attempt.outcome, attempt.finished_at) == (AttemptOutcome.TRANSIENT_FAILURE, failed_at)
    assert n.is_settled


def test_one_being_sent_does_not_fall_back_to_the_next_channel_either() -> None:
    n = accepted(Channel.WEBHOOK)
    n.fallbacks = [Route(Channel.IN_APP, None, Content("t", "b"))]
    n.begin_attempt(T0 + STEP)
    n.request_cancel(LATER)
    fail(n, LATER + STEP, ErrorClass.PERMANENT, RetryPolicy())
    assert (n.status, n.channel) == (S.CANCELLED, Channel.WEBHOOK)


def test_a_permanent_failure_of_one_being_sent_still_fails_it() -> None:
    n = in_status(S.SENDING)
    n.request_cancel(LATER)
    fail(n, LATER + STEP, ErrorClass.PERMANENT, RetryPolicy())
    assert n.status is S.FAILED


def test_a_success_after_the_request_still_ends_sent() -> None:
    n = in_status(S.SENDING)
    n.request_cancel(LATER)
    n.record_success(LATER + STEP, DeliveryResult("fake", "m-1"))
    assert n.status is S.SENT


def test_a_dead_letter_keeps_the_request_and_cannot_be_replayed() -> None:
    n = in_status(S.FAILED)
    updated = n.updated_at
    assert n.request_cancel(LATER) is False
    assert (n.status, n.cancel_requested_at, n.updated_at) == (S.FAILED, LATER, updated)
    snapshot = copy.deepcopy(n)
    with pytest.raises(PreconditionFailed) as info:
        n.replay(LATER + STEP)
    assert info.value.reason == "CANCEL_REQUESTED"
    assert n == snapshot


def test_the_first_request_counts() -> None:
    n = in_status(S.SENDING)
    n.request_cancel(LATER)
    assert n.request_cancel(LATER + STEP) is False
    assert n.cancel_requested_at == LATER


def test_a_second_request_after_the_cancel_is_a_no_op() -> None:
    n = accepted()
    n.request_cancel(LATER)
    snapshot = copy.deepcopy(n)
    assert n.request_cancel(LATER + STEP) is False
    assert n == snapshot


@pytest.mark.parametrize("status", [S.SENT, S.DELIVERED, S.READ, S.SUPPRESSED, S.EXPIRED])
def test_one_sent_or_settled_otherwise_refuses(status: Status) -> None:
    n = in_status(status)
    snapshot = copy.deepcopy(n)
    with pytest.raises(IllegalTransition):
        n.request_cancel(LATER)
    assert n == snapshot


def test_a_queued_one_that_kept_a_request_is_cancelled_instead_of_attempted() -> None:
    """A worker that loaded it before the request retries it; the store keeps the request."""
    n = in_status(S.SENDING)
    fail(n, T0 + timedelta(seconds=5), ErrorClass.TRANSIENT, RetryPolicy())
    assert n.status is S.QUEUED
    n.cancel_requested_at = LATER  # merged into the row by the store
    assert n.begin_attempt(n.due_at) is None
    assert n.status is S.CANCELLED
    assert len(n.attempts) == 1


def test_a_rescue_of_one_whose_worker_vanished_cancels_it() -> None:
    n = in_status(S.SENDING)
    n.request_cancel(LATER)
    assert n.begin_attempt(LATER + timedelta(minutes=1)) is None
    assert n.status is S.CANCELLED
    [attempt] = n.attempts
    assert attempt.outcome is AttemptOutcome.ABANDONED


def test_cancel_reaches_only_what_was_not_handed_over() -> None:
    n = in_status(S.SENDING)
    with pytest.raises(IllegalTransition):
        n.cancel(LATER)


def test_a_request_on_one_being_sent_changes_nothing_else() -> None:
    n = in_status(S.SENDING, Channel.EMAIL)
    before = copy.deepcopy(n)
    n.request_cancel(LATER)
    before.cancel_requested_at = LATER
    assert n == before
    assert n.address == Address("email", "user@example.com")
