"""Notification.engage: what the recipient did, and the statuses that follow from it."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest

from domain.errors import PreconditionFailed
from domain.notification import (
    PROVIDER_ACCEPTED,
    Channel,
    DeliveryResult,
    EngagementAction,
    Status,
)
from tests.unit.domain.notification_builders import STEP, T0, accepted, in_status

A = EngagementAction
LATER = T0 + timedelta(hours=1)
REPORTED = T0 + timedelta(minutes=30)

# (status before, action) -> status after, written out by hand.
EXPECTED_STATUS = {
    (Status.SENT, A.DELIVERED): Status.DELIVERED,
    (Status.SENT, A.OPENED): Status.READ,
    (Status.SENT, A.CLICKED): Status.READ,
    (Status.SENT, A.DISMISSED): Status.SENT,
    (Status.DELIVERED, A.DELIVERED): Status.DELIVERED,
    (Status.DELIVERED, A.OPENED): Status.READ,
    (Status.DELIVERED, A.CLICKED): Status.READ,
    (Status.DELIVERED, A.DISMISSED): Status.DELIVERED,
    (Status.READ, A.DELIVERED): Status.READ,
    (Status.READ, A.OPENED): Status.READ,
    (Status.READ, A.CLICKED): Status.READ,
    (Status.READ, A.DISMISSED): Status.READ,
}


@pytest.mark.parametrize(("before", "action"), sorted(EXPECTED_STATUS), ids=str)
def test_each_action_records_its_time_and_moves_the_status_forward_only(
    before: Status, action: EngagementAction
) -> None:
    n = in_status(before, Channel.IN_APP if before is Status.READ else Channel.WEBHOOK)
    history_before = list(n.history)

    assert n.engage(action, REPORTED, LATER) is True

    after = EXPECTED_STATUS[(before, action)]
    assert n.status is after
    assert n.engagements == {action: REPORTED}
    assert n.updated_at == LATER
    if after is before:
        assert n.history == history_before
    else:
        # The status changed when we learned of it (LATER), whatever time the event claims.
        assert n.history[-1].status is after
        assert n.history[-1].at == LATER
        assert n.history[-1].reason == f"engagement reported: {action}"
        assert n.history[:-1] == history_before


@pytest.mark.parametrize("action", list(A))
def test_a_repeat_changes_nothing_and_keeps_the_first_time(action: EngagementAction) -> None:
    n = in_status(Status.SENT, Channel.WEBHOOK)
    assert n.engage(action, REPORTED, LATER)
    first = copy.deepcopy(n)

    assert n.engage(action, REPORTED + STEP, LATER + STEP) is False

    assert n == first


def test_actions_accumulate_each_with_its_own_time() -> None:
    n = in_status(Status.SENT, Channel.PUSH)
    assert n.engage(A.DELIVERED, T0 + timedelta(seconds=10), LATER)
    assert n.engage(A.OPENED, T0 + timedelta(seconds=20), LATER + STEP)
    assert n.engage(A.CLICKED, T0 + timedelta(seconds=30), LATER + 2 * STEP)
    assert n.engage(A.DISMISSED, T0 + timedelta(seconds=40), LATER + 3 * STEP)
    assert n.engagements == {
        A.DELIVERED: T0 + timedelta(seconds=10),
        A.OPENED: T0 + timedelta(seconds=20),
        A.CLICKED: T0 + timedelta(seconds=30),
        A.DISMISSED: T0 + timedelta(seconds=40),
    }
    assert n.status is Status.READ
    assert [c.status for c in n.history][-3:] == [Status.SENT, Status.DELIVERED, Status.READ]


def test_an_open_before_the_delivery_receipt_does_not_step_back() -> None:
    n = in_status(Status.SENT, Channel.EMAIL)
    assert n.engage(A.OPENED, REPORTED, LATER)
    assert n.engage(A.DELIVERED, REPORTED - STEP, LATER + STEP)
    assert n.status is Status.READ
    assert n.engagements[A.DELIVERED] == REPORTED - STEP


NOT_ACCEPTED = [s for s in Status if s not in PROVIDER_ACCEPTED and s is not Status.PENDING]


@pytest.mark.parametrize("status", [Status.PENDING, *NOT_ACCEPTED])
@pytest.mark.parametrize("action", list(A))
def test_only_a_notification_a_provider_accepted_can_be_engaged_with(
    status: Status, action: EngagementAction
) -> None:
    n = in_status(status, Channel.WEBHOOK)
    before = copy.deepcopy(n)

    with pytest.raises(PreconditionFailed) as info:
        n.engage(action, REPORTED, LATER)

    assert info.value.reason == "NOT_SENT"
    assert str(status) in info.value.description
    assert n == before


def test_the_accepted_attempt_names_provider_and_time() -> None:
    n = accepted(Channel.WEBHOOK)
    n.begin_attempt(T0 + STEP)
    assert n.accepted_attempt is None
    n.record_success(T0 + 2 * STEP, DeliveryResult("webhook", "msg-9"))
    attempt = n.accepted_attempt
    assert attempt is not None
    assert (attempt.provider, attempt.finished_at) == ("webhook", T0 + 2 * STEP)


def test_a_failed_notification_has_no_accepted_attempt() -> None:
    assert in_status(Status.FAILED, Channel.WEBHOOK).accepted_attempt is None
