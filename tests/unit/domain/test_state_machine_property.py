"""Random sequences of verbs on one aggregate never break the status machine's invariants."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from domain.errors import IllegalTransition, PreconditionFailed
from domain.notification import (
    TERMINAL,
    AttemptOutcome,
    Channel,
    DeliveryResult,
    ErrorClass,
    Notification,
    RetryPolicy,
    Status,
    StatusChange,
    can_transition,
)
from tests.unit.domain.notification_builders import T0, accepted, in_status


def check_invariants(n: Notification) -> None:
    """Everything that must hold of an aggregate, whatever happened to it."""
    statuses = [c.status for c in n.history]
    assert statuses[0] is Status.PENDING, "history starts at PENDING"
    assert statuses[-1] is n.status, "the last history entry is the current status"
    for before, after in itertools.pairwise(statuses):
        assert can_transition(before, after), f"history has an illegal step {before}->{after}"
    times = [c.at for c in n.history]
    assert times == sorted(times), "history goes forward in time"
    assert n.updated_at == times[-1]
    for status in statuses[:-1]:
        assert status not in TERMINAL, f"history moves on from terminal {status}"

    numbers = [a.number for a in n.attempts]
    assert numbers == list(range(1, len(n.attempts) + 1)), f"attempts numbered {numbers}"
    open_attempts = [a for a in n.attempts if a.outcome is AttemptOutcome.IN_PROGRESS]
    assert len(open_attempts) <= 1, "at most one attempt in progress"
    if n.status is Status.SENDING:
        assert len(open_attempts) == 1, "SENDING has an attempt in progress"
        assert n.attempts[-1] is open_attempts[0], "the open attempt is the last one"
    else:
        assert not open_attempts, f"an attempt is in progress while {n.status}"
    for a in n.attempts:
        if a.outcome is not AttemptOutcome.IN_PROGRESS:
            assert a.finished_at is not None
            assert a.finished_at >= a.started_at
    assert statuses.count(Status.SENDING) == len(n.attempts), "one SENDING entry per attempt"


Snapshot = tuple[object, ...]


def snapshot(n: Notification) -> Snapshot:
    """Everything a verb may change. History entries and attempts are frozen, so shallow
    copies of the lists are enough (and much cheaper than deepcopy, once per step)."""
    return (n.status, n.status_reason, n.updated_at, n.due_at, tuple(n.history), tuple(n.attempts))


class NotificationLife(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now: datetime = T0
        self.n: Notification = accepted()
        self.policy = RetryPolicy()
        self.terminal: Snapshot | None = None
        self.cancels = True

    @initialize(
        channel=st.sampled_from([Channel.IN_APP, Channel.WEBHOOK, Channel.EMAIL]),
        ttl=st.none() | st.integers(min_value=1, max_value=900),
        max_attempts=st.integers(min_value=1, max_value=4),
        cancels=st.booleans(),
    )
    def create(self, channel: Channel, ttl: int | None, max_attempts: int, cancels: bool) -> None:
        # Cancelling ends most runs within a step or two; half the runs never cancel, so the
        # later states (SENT, DELIVERED, READ) are reached often too.
        self.cancels = cancels
        expires = None if ttl is None else T0 + timedelta(seconds=ttl)
        self.n = accepted(channel, expires_at=expires)
        self.policy = RetryPolicy(
            max_attempts=max_attempts,
            base_delay=timedelta(seconds=1),
            max_delay=timedelta(minutes=2),
        )

    @rule(seconds=st.integers(min_value=0, max_value=300))
    def advance(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    def _attempt(self, verb: str, *args: object, must_succeed_from: set[Status]) -> None:
        """Call a verb; a refusal must be an expected one and must leave no trace."""
        before = snapshot(self.n)
        status_before = self.n.status
        refused: Exception | None = None
        try:
            getattr(self.n, verb)(*args)
        except (IllegalTransition, PreconditionFailed) as error:
            refused = error
        if refused is not None:
            assert status_before not in must_succeed_from, f"{verb} refused from {status_before}"
            assert snapshot(self.n) == before, (
                f"{verb} raised {refused!r} but changed the aggregate"
            )
        elif self.terminal is not None:
            # A no-op is allowed (cancel twice, mark_read twice); a change is not.
            assert snapshot(self.n) == self.terminal, f"{verb} changed a terminal notification"

    @rule()
    def begin_attempt(self) -> None:
        self._attempt("begin_attempt", self.now, must_succeed_from={Status.QUEUED, Status.SENDING})

    @rule(delivered=st.booleans())
    def record_success(self, delivered: bool) -> None:
        result = DeliveryResult("fake", "msg", delivered=delivered)
        self._attempt("record_success", self.now, result, must_succeed_from={Status.SENDING})

    @rule(
        error_class=st.sampled_from(
            [ErrorClass.TRANSIENT, ErrorClass.PERMANENT, ErrorClass.PROVIDER_DOWN]
        ),
        draw=st.floats(min_value=0.0, max_value=1.0),
        retry_after=st.none() | st.integers(min_value=0, max_value=600),
    )
    def record_failure(self, error_class: ErrorClass, draw: float, retry_after: int | None) -> None:
        before = self.n.status
        before_failure = snapshot(self.n)
        try:
            self.n.record_failure(
                self.now,
                provider="fake",
                error_class=error_class,
                message="boom",
                policy=self.policy,
                random=lambda: draw,
                retry_after=None if retry_after is None else timedelta(seconds=retry_after),
            )
        except IllegalTransition:
            assert before is not Status.SENDING
            assert snapshot(self.n) == before_failure
            return
        assert before is Status.SENDING
        if self.n.cancel_requested_at is not None and error_class is not ErrorClass.PERMANENT:
            assert self.n.status is Status.CANCELLED, "a cancel-requested one is not retried"
        if self.n.status is Status.QUEUED:
            assert error_class is not ErrorClass.PERMANENT
            assert self.n.due_at >= self.now
            assert self.policy.allows_another(len(self.n.attempts))
        elif error_class is ErrorClass.PERMANENT:
            assert self.n.status is Status.FAILED

    @precondition(lambda self: self.cancels)
    @rule()
    def cancel(self) -> None:
        self._attempt(
            "cancel", self.now, must_succeed_from={Status.PENDING, Status.QUEUED, Status.CANCELLED}
        )

    @precondition(lambda self: self.cancels)
    @rule()
    def request_cancel(self) -> None:
        self._attempt(
            "request_cancel",
            self.now,
            must_succeed_from={
                Status.PENDING,
                Status.QUEUED,
                Status.SENDING,
                Status.FAILED,
                Status.CANCELLED,
            },
        )

    @rule()
    def mark_read(self) -> None:
        ok = (
            {Status.SENT, Status.DELIVERED, Status.READ}
            if self.n.channel is Channel.IN_APP
            else set()
        )
        self._attempt("mark_read", self.now, must_succeed_from=ok)

    @rule()
    def mark_delivered(self) -> None:
        self._attempt(
            "mark_delivered",
            self.now,
            must_succeed_from={Status.SENT, Status.DELIVERED, Status.READ},
        )

    @rule()
    def expire(self) -> None:
        ok = {Status.QUEUED, Status.SENDING} if self.n.is_expired(self.now) else set()
        self._attempt("expire", self.now, must_succeed_from=ok)

    @invariant()
    def consistent(self) -> None:
        check_invariants(self.n)
        if self.terminal is None and self.n.status in TERMINAL:
            self.terminal = snapshot(self.n)
        if self.terminal is not None:
            assert snapshot(self.n) == self.terminal, "a terminal notification changed"


NotificationLife.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestNotificationLife = NotificationLife.TestCase


# -- the invariant checker itself can fail -------------------------------------------------------


def test_invariants_hold_for_every_reachable_status() -> None:
    for status in Status:
        check_invariants(in_status(status))


def test_invariants_catch_an_illegal_history_step() -> None:
    n = in_status(Status.SENT)
    n.history.insert(2, StatusChange(Status.DELIVERED, n.history[1].at))
    with pytest.raises(AssertionError, match="illegal step"):
        check_invariants(n)


def test_invariants_catch_an_attempt_left_open() -> None:
    n = in_status(Status.SENDING)
    n.status = Status.QUEUED
    n.history.append(StatusChange(Status.QUEUED, n.updated_at))
    with pytest.raises(AssertionError, match="in progress while QUEUED"):
        check_invariants(n)


def test_invariants_catch_misnumbered_attempts() -> None:
    n = in_status(Status.SENDING)
    n.attempts[0] = dataclasses.replace(n.attempts[0], number=2)
    with pytest.raises(AssertionError, match="numbered"):
        check_invariants(n)
