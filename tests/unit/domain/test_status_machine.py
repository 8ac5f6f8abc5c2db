"""The notification status machine: every (current, target) pair, and every public verb."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from datetime import timedelta

import pytest

from domain.errors import IllegalTransition, PreconditionFailed, ValidationFailed
from domain.notification import (
    SETTLED,
    TERMINAL,
    TRANSITIONS,
    AttemptOutcome,
    Channel,
    DeliveryResult,
    ErrorClass,
    Notification,
    RetryPolicy,
    Status,
    can_transition,
)
from tests.unit.domain.notification_builders import STEP, T0, accepted, fail, half, in_status

S = Status

# The legal moves, written out by hand from DESIGN.md section 3 (plus the documented extras in
# status.py: SENDING -> SENDING is a rescue, SENT -> READ is a read receipt without delivery
# receipt, FAILED -> QUEUED is an operator's replay of a dead letter, SENDING -> CANCELLED is a
# failed attempt of one whose cancel was requested while it was out). Kept independent of
# TRANSITIONS so a change to the table has to change this too.
EXPECTED_LEGAL: frozenset[tuple[Status, Status]] = frozenset(
    {
        (S.PENDING, S.QUEUED),
        (S.PENDING, S.SUPPRESSED),
        (S.PENDING, S.CANCELLED),
        (S.QUEUED, S.SENDING),
        (S.QUEUED, S.CANCELLED),
        (S.QUEUED, S.EXPIRED),
        (S.QUEUED, S.FAILED),
        (S.SENDING, S.SENDING),
        (S.SENDING, S.SENT),
        (S.SENDING, S.QUEUED),
        (S.SENDING, S.FAILED),
        (S.FAILED, S.QUEUED),
        (S.SENDING, S.EXPIRED),
        (S.SENDING, S.CANCELLED),
        (S.SENT, S.DELIVERED),
        (S.SENT, S.READ),
        (S.DELIVERED, S.READ),
    }
)
ALL_PAIRS = list(itertools.product(Status, Status))
LEGAL_PAIRS = [p for p in ALL_PAIRS if p in EXPECTED_LEGAL]
ILLEGAL_PAIRS = [p for p in ALL_PAIRS if p not in EXPECTED_LEGAL]
LATER = T0 + timedelta(hours=1)


def pair_id(pair: tuple[Status, Status]) -> str:
    return f"{pair[0]}->{pair[1]}"


def test_transition_table_matches_the_design() -> None:
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == EXPECTED_LEGAL
    assert set(TRANSITIONS) == set(Status)
    assert {S.READ, S.SUPPRESSED, S.CANCELLED, S.FAILED, S.EXPIRED} == TERMINAL
    assert TERMINAL | {S.SENT, S.DELIVERED} == SETTLED


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=pair_id)
def test_can_transition_agrees_with_the_design(pair: tuple[Status, Status]) -> None:
    assert can_transition(*pair) is (pair in EXPECTED_LEGAL)


# -- every pair through the aggregate ----------------------------------------------------------


@pytest.mark.parametrize("pair", LEGAL_PAIRS, ids=pair_id)
def test_legal_move_is_applied_and_recorded(pair: tuple[Status, Status]) -> None:
    current, target = pair
    n = in_status(current)
    before = len(n.history)
    n._move(target, LATER, "why")
    assert n.status is target
    assert n.updated_at == LATER
    assert n.status_reason == "why"
    assert len(n.history) == before + 1
    assert (n.history[-1].status, n.history[-1].at, n.history[-1].reason) == (target, LATER, "why")


@pytest.mark.parametrize("pair", ILLEGAL_PAIRS, ids=pair_id)
def test_illegal_move_raises_and_changes_nothing(pair: tuple[Status, Status]) -> None:
    current, target = pair
    n = in_status(current)
    snapshot = copy.deepcopy(n)
    with pytest.raises(IllegalTransition) as info:
        n._move(target, LATER)
    assert (info.value.current, info.value.attempted) == (current, target)
    assert n == snapshot


# The public verb that performs each legal move (where one exists). Notifications are built with
# expires_at = EXPIRES; only expire() is called after it, every other verb before it.
Verb = Callable[[Notification], object]
EXPIRES = T0 + timedelta(minutes=30)
AFTER_EXPIRY = EXPIRES + STEP
BEFORE_EXPIRY = T0 + timedelta(minutes=1)

VERB_FOR: dict[tuple[Status, Status], Verb] = {
    (S.PENDING, S.SUPPRESSED): lambda n: n.suppress(BEFORE_EXPIRY, "opted out"),
    (S.PENDING, S.CANCELLED): lambda n: n.cancel(BEFORE_EXPIRY),
    (S.QUEUED, S.SENDING): lambda n: n.begin_attempt(BEFORE_EXPIRY),
    (S.QUEUED, S.CANCELLED): lambda n: n.cancel(BEFORE_EXPIRY),
    (S.QUEUED, S.EXPIRED): lambda n: n.expire(AFTER_EXPIRY),
    (S.SENDING, S.SENDING): lambda n: n.begin_attempt(BEFORE_EXPIRY),
    (S.SENDING, S.SENT): lambda n: n.record_success(BEFORE_EXPIRY, DeliveryResult("p")),
    (S.SENDING, S.QUEUED): lambda n: fail(n, BEFORE_EXPIRY, ErrorClass.TRANSIENT, RetryPolicy()),
    (S.SENDING, S.FAILED): lambda n: fail(n, BEFORE_EXPIRY, ErrorClass.PERMANENT, RetryPolicy()),
    (S.SENDING, S.EXPIRED): lambda n: n.expire(AFTER_EXPIRY),
    (S.SENDING, S.CANCELLED): lambda n: (
        n.request_cancel(BEFORE_EXPIRY),
        fail(n, BEFORE_EXPIRY, ErrorClass.TRANSIENT, RetryPolicy()),
    ),
    (S.SENT, S.DELIVERED): lambda n: n.mark_delivered(BEFORE_EXPIRY),
    (S.SENT, S.READ): lambda n: n.mark_read(BEFORE_EXPIRY),
    (S.DELIVERED, S.READ): lambda n: n.mark_read(BEFORE_EXPIRY),
    (S.FAILED, S.QUEUED): lambda n: n.replay(BEFORE_EXPIRY),
}
# PENDING -> QUEUED happens inside accept() (tested below); QUEUED -> FAILED has no verb yet.
NO_VERB = {(S.PENDING, S.QUEUED), (S.QUEUED, S.FAILED)}


def test_every_legal_move_has_a_verb_or_is_known_not_to() -> None:
    assert set(VERB_FOR) | NO_VERB == EXPECTED_LEGAL
    assert not set(VERB_FOR) & NO_VERB


@pytest.mark.parametrize("pair", [p for p in ALL_PAIRS if p in VERB_FOR], ids=pair_id)
def test_legal_move_through_its_verb(pair: tuple[Status, Status]) -> None:
    current, target = pair
    n = in_status(current, expires_at=EXPIRES)
    VERB_FOR[pair](n)
    assert n.status is target
    assert n.history[-1].status is target


# For each verb: the statuses it may act from, and what it leaves behind ("same" = no-op).
VERB_ORIGINS: dict[str, tuple[Verb, dict[Status, Status | str]]] = {
    "cancel": (
        lambda n: n.cancel(BEFORE_EXPIRY),
        {S.PENDING: S.CANCELLED, S.QUEUED: S.CANCELLED, S.CANCELLED: "same"},
    ),
    "request_cancel": (
        lambda n: n.request_cancel(BEFORE_EXPIRY),
        {
            S.PENDING: S.CANCELLED,
            S.QUEUED: S.CANCELLED,
            S.SENDING: "same",
            S.FAILED: "same",
            S.CANCELLED: "same",
        },
    ),
    "begin_attempt": (
        lambda n: n.begin_attempt(BEFORE_EXPIRY),
        {S.QUEUED: S.SENDING, S.SENDING: S.SENDING},
    ),
    "record_success": (
        lambda n: n.record_success(BEFORE_EXPIRY, DeliveryResult("p")),
        {S.SENDING: S.SENT},
    ),
    "record_failure": (
        lambda n: fail(n, BEFORE_EXPIRY, ErrorClass.TRANSIENT, RetryPolicy()),
        {S.SENDING: S.QUEUED},
    ),
    "suppress": (lambda n: n.suppress(BEFORE_EXPIRY, "cap"), {S.PENDING: S.SUPPRESSED}),
    "expire": (lambda n: n.expire(AFTER_EXPIRY), {S.QUEUED: S.EXPIRED, S.SENDING: S.EXPIRED}),
    "mark_delivered": (
        lambda n: n.mark_delivered(BEFORE_EXPIRY),
        {S.SENT: S.DELIVERED, S.DELIVERED: "same", S.READ: "same"},
    ),
    "mark_read": (
        lambda n: n.mark_read(BEFORE_EXPIRY),
        {S.SENT: S.READ, S.DELIVERED: S.READ, S.READ: "same"},
    ),
    "replay": (lambda n: n.replay(BEFORE_EXPIRY), {S.FAILED: S.QUEUED}),
}


@pytest.mark.parametrize(
    ("verb", "origin"),
    [(v, s) for v in VERB_ORIGINS for s in Status],
    ids=[f"{v}-from-{s}" for v in VERB_ORIGINS for s in Status],
)
def test_verb_from_every_status(verb: str, origin: Status) -> None:
    action, allowed = VERB_ORIGINS[verb]
    n = in_status(origin, expires_at=EXPIRES)
    snapshot = copy.deepcopy(n)
    expected = allowed.get(origin)
    if expected is None:
        with pytest.raises(IllegalTransition):
            action(n)
        assert n == snapshot, "a refused verb must leave the aggregate untouched"
    elif expected == "same":
        action(n)
        assert n.status is origin
        assert n.history == snapshot.history
    else:
        action(n)
        assert n.status is expected
        assert n.history[: len(snapshot.history)] == snapshot.history
        assert n.history[-1].status is expected


# -- the public verbs, one by one ------------------------------------------------------------


def test_accept_queues_with_pending_then_queued_history() -> None:
    n = accepted(Channel.EMAIL)
    assert n.status is S.QUEUED
    assert [c.status for c in n.history] == [S.PENDING, S.QUEUED]
    assert all(c.at == T0 for c in n.history)
    assert n.due_at == T0
    assert n.attempts == []
    assert n.version == 0


def test_accept_holds_a_scheduled_notification_until_its_time() -> None:
    at = T0 + timedelta(hours=2)
    n = accepted(scheduled_at=at)
    assert n.status is S.QUEUED
    assert n.due_at == at
    assert n.status_reason == "scheduled"


def test_accept_with_scheduled_time_in_the_past_is_due_now() -> None:
    n = accepted(scheduled_at=T0 - timedelta(hours=2))
    assert n.due_at == T0
    assert n.status_reason == ""


def test_accept_refuses_invalid_input() -> None:
    with pytest.raises(ValidationFailed) as info:
        accepted(expires_at=T0 - STEP)
    assert [v.field for v in info.value.violations] == ["expires_at"]


def test_begin_attempt_opens_attempt_one() -> None:
    n = accepted()
    attempt = n.begin_attempt(T0 + STEP)
    assert attempt is not None
    assert attempt.number == 1
    assert attempt.outcome is AttemptOutcome.IN_PROGRESS
    assert attempt.started_at == T0 + STEP
    assert n.attempts == [attempt]
    assert n.status is S.SENDING


def test_record_success_sends() -> None:
    n = in_status(S.SENDING)
    n.record_success(T0 + timedelta(seconds=5), DeliveryResult("smtp", "msg-9"))
    assert n.status is S.SENT
    assert n.status_reason == "accepted by smtp"
    [attempt] = n.attempts
    assert attempt.outcome is AttemptOutcome.ACCEPTED
    assert attempt.provider == "smtp"
    assert attempt.provider_message_id == "msg-9"
    assert attempt.finished_at == T0 + timedelta(seconds=5)
    assert attempt.latency_ms == 4000


def test_record_success_delivered_gives_sent_then_delivered() -> None:
    n = in_status(S.SENDING)
    n.record_success(T0 + STEP * 2, DeliveryResult("inbox", delivered=True))
    assert n.status is S.DELIVERED
    assert [c.status for c in n.history][-3:] == [S.SENDING, S.SENT, S.DELIVERED]
    assert n.unread


def test_transient_failure_requeues_with_due_time_in_the_future() -> None:
    n = in_status(S.SENDING)
    now = T0 + timedelta(seconds=10)
    fail(n, now, ErrorClass.TRANSIENT, RetryPolicy(base_delay=timedelta(seconds=2)))
    assert n.status is S.QUEUED
    # Attempt 1: cap = base = 2s; the jitter draw 0.5 gives 1s.
    assert n.due_at == now + timedelta(seconds=1)
    assert n.due_at > now
    [attempt] = n.attempts
    assert attempt.outcome is AttemptOutcome.TRANSIENT_FAILURE
    assert attempt.error_class is ErrorClass.TRANSIENT
    assert attempt.error_message == "boom"
    assert "retry" in n.status_reason


def test_permanent_failure_fails_without_retry() -> None:
    n = in_status(S.SENDING)
    due_before = n.due_at
    fail(n, T0 + STEP * 5, ErrorClass.PERMANENT, RetryPolicy(max_attempts=10))
    assert n.status is S.FAILED
    assert n.due_at == due_before
    assert n.attempts[-1].outcome is AttemptOutcome.PERMANENT_FAILURE
    assert n.status_reason.startswith("permanent failure")


def test_transient_failures_fail_once_attempts_are_used_up() -> None:
    policy = RetryPolicy(max_attempts=3)
    n = accepted()
    t = T0
    for expected in (S.QUEUED, S.QUEUED, S.FAILED):
        t = max(t, n.due_at) + STEP
        n.begin_attempt(t)
        t += STEP
        fail(n, t, ErrorClass.TRANSIENT, policy)
        assert n.status is expected
    assert [a.number for a in n.attempts] == [1, 2, 3]
    assert all(a.outcome is AttemptOutcome.TRANSIENT_FAILURE for a in n.attempts)
    assert "gave up after 3 attempts" in n.status_reason


def test_provider_down_is_retried_like_a_transient_failure() -> None:
    n = in_status(S.SENDING)
    fail(n, T0 + STEP * 5, ErrorClass.PROVIDER_DOWN, RetryPolicy())
    assert n.status is S.QUEUED
    assert n.attempts[-1].outcome is AttemptOutcome.TRANSIENT_FAILURE


def test_transient_failure_whose_retry_would_be_after_expiry_expires() -> None:
    n = in_status(S.SENDING, expires_at=T0 + timedelta(seconds=3))
    now = T0 + STEP * 2
    n.record_failure(
        now,
        provider="p",
        error_class=ErrorClass.TRANSIENT,
        message="429",
        policy=RetryPolicy(),
        random=half,
        retry_after=timedelta(seconds=60),
    )
    assert n.status is S.EXPIRED


def test_begin_attempt_after_expiry_expires_instead() -> None:
    n = accepted(expires_at=T0 + timedelta(minutes=5))
    assert n.begin_attempt(T0 + timedelta(minutes=5)) is None
    assert n.status is S.EXPIRED
    assert n.attempts == []
    assert "expires_at" in n.status_reason


def test_begin_attempt_on_an_expired_rescue_abandons_and_expires() -> None:
    n = in_status(S.SENDING, expires_at=T0 + timedelta(minutes=5))
    later = T0 + timedelta(minutes=6)
    assert n.begin_attempt(later) is None
    assert n.status is S.EXPIRED
    [attempt] = n.attempts
    assert attempt.outcome is AttemptOutcome.ABANDONED
    assert attempt.finished_at == later


def test_expire_before_expires_at_is_refused() -> None:
    n = accepted(expires_at=T0 + timedelta(minutes=5))
    with pytest.raises(PreconditionFailed):
        n.expire(T0 + timedelta(minutes=4))
    assert n.status is S.QUEUED


def test_cancel_from_queued() -> None:
    n = accepted()
    n.cancel(T0 + STEP)
    assert n.status is S.CANCELLED
    assert n.status_reason == "cancelled by caller"
    assert n.is_settled


def test_cancel_twice_is_a_no_op() -> None:
    n = accepted()
    n.cancel(T0 + STEP)
    snapshot = copy.deepcopy(n)
    n.cancel(T0 + STEP * 2)
    assert n == snapshot


def test_cancel_from_sent_raises() -> None:
    n = in_status(S.SENT)
    with pytest.raises(IllegalTransition) as info:
        n.cancel(T0 + timedelta(minutes=1))
    assert info.value.current == S.SENT
    assert info.value.attempted == S.CANCELLED
    assert n.status is S.SENT


def test_mark_read_in_app_delivered_then_again() -> None:
    n = in_status(S.DELIVERED, Channel.IN_APP)
    assert n.unread
    assert n.mark_read(T0 + timedelta(minutes=1)) is True
    assert n.status is S.READ
    assert not n.unread
    history = list(n.history)
    assert n.mark_read(T0 + timedelta(minutes=2)) is False
    assert n.status is S.READ
    assert n.history == history


def test_mark_read_on_a_webhook_is_a_failed_precondition() -> None:
    n = in_status(S.DELIVERED, Channel.WEBHOOK)
    with pytest.raises(PreconditionFailed) as info:
        n.mark_read(T0 + timedelta(minutes=1))
    assert info.value.reason == "NOT_IN_APP"
    assert n.status is S.DELIVERED


def test_mark_read_on_a_queued_in_app_notification_is_illegal() -> None:
    n = accepted(Channel.IN_APP)
    with pytest.raises(IllegalTransition):
        n.mark_read(T0 + STEP)
    assert n.status is S.QUEUED


def test_begin_attempt_from_sending_abandons_the_previous_attempt() -> None:
    n = in_status(S.SENDING)
    rescue_at = T0 + timedelta(minutes=2)
    attempt = n.begin_attempt(rescue_at)
    assert attempt is not None
    assert n.status is S.SENDING
    first, second = n.attempts
    assert first.outcome is AttemptOutcome.ABANDONED
    assert first.error_class is ErrorClass.LEASE_LOST
    assert first.finished_at == rescue_at
    assert second == attempt
    assert (second.number, second.outcome) == (2, AttemptOutcome.IN_PROGRESS)
    assert n.status_reason == "previous attempt abandoned"
    assert [c.status for c in n.history][-2:] == [S.SENDING, S.SENDING]


def test_outcome_without_an_open_attempt_is_illegal() -> None:
    n = in_status(S.SENDING)
    n.attempts.clear()  # an inconsistent load: SENDING with nothing in progress
    with pytest.raises(IllegalTransition):
        n.record_success(T0 + STEP * 3, DeliveryResult("p"))


def test_changed_at_returns_the_latest_time_of_a_status() -> None:
    n = in_status(S.SENT)
    assert n.changed_at(S.QUEUED) == T0
    assert n.changed_at(S.SENT) == T0 + STEP * 2
    assert n.changed_at(S.READ) is None
