"""last_provider: who handled a notification last on its channel (statistics group by it), so a
failure counts against the provider that failed it, not against none."""

from __future__ import annotations

from datetime import timedelta

from domain.notification import (
    Channel,
    Content,
    DeliveryResult,
    ErrorClass,
    Notification,
    RetryPolicy,
    Route,
)
from tests.unit.domain.notification_builders import STEP, T0, accepted


def failure(n: Notification, provider: str, error_class: ErrorClass, at_seconds: int) -> None:
    n.record_failure(
        T0 + timedelta(seconds=at_seconds),
        provider=provider,
        error_class=error_class,
        message="boom",
        policy=RetryPolicy(),
        random=lambda: 0.5,
    )


def test_none_before_any_attempt() -> None:
    assert accepted().last_provider == ""


def test_the_provider_that_accepted_it_not_the_one_failed_over_before() -> None:
    n = accepted()
    n.begin_attempt(T0 + STEP)
    n.record_failover(T0 + 2 * STEP, provider="first", message="down")
    n.record_success(T0 + 3 * STEP, DeliveryResult("second", "m-1"))
    assert n.last_provider == "second"


def test_the_provider_that_failed_it_while_it_waits_for_a_retry_and_once_it_failed() -> None:
    n = accepted()
    n.begin_attempt(T0 + STEP)
    failure(n, "smtp", ErrorClass.TRANSIENT, 2)
    assert n.last_provider == "smtp"
    n.begin_attempt(n.due_at)
    failure(n, "smtp-backup", ErrorClass.PERMANENT, 600)
    assert n.last_provider == "smtp-backup"


def test_an_abandoned_attempt_names_no_provider_and_is_passed_over() -> None:
    n = accepted()
    n.begin_attempt(T0 + STEP)
    failure(n, "smtp", ErrorClass.TRANSIENT, 2)
    n.begin_attempt(n.due_at)
    n.begin_attempt(n.due_at + timedelta(minutes=1))  # the first holder vanished
    assert n.attempts[-2].provider == ""
    assert n.last_provider == "smtp"


def test_a_fallback_channel_starts_with_none() -> None:
    n = accepted(Channel.WEBHOOK)
    n.fallbacks = [Route(Channel.IN_APP, None, Content("t", "b"))]
    n.begin_attempt(T0 + STEP)
    failure(n, "webhook", ErrorClass.PERMANENT, 2)
    assert n.channel is Channel.IN_APP
    assert n.last_provider == ""
