"""Fallback chains of channels, failed-over provider attempts and the provider pin, on the
Notification aggregate alone."""

from __future__ import annotations

from dataclasses import replace

from domain.notification import (
    Address,
    AttemptOutcome,
    Channel,
    Content,
    DeliveryResult,
    ErrorClass,
    Notification,
    RetryPolicy,
    Route,
    Status,
    validate_new,
)
from tests.unit.domain.notification_builders import STEP, T0, half, new_notification

EMAIL = Route(Channel.EMAIL, Address("email", "user@example.com"), Content("Mail", "mail body"))
SMS = Route(Channel.SMS, Address("phone", "+14155550123"), Content("", "sms body"))
POLICY = RetryPolicy(max_attempts=2)


def push_with_fallbacks(*routes: Route, skipped: tuple[str, ...] = ()) -> Notification:
    new = replace(new_notification(Channel.PUSH), fallbacks=routes, skipped=skipped)
    return Notification.accept(new, id="n-1", tenant_id="t", caller="svc", fingerprint="f", now=T0)


def fail(
    n: Notification,
    error_class: ErrorClass,
    provider: str = "fcm",
    msg: str = "no",
    policy: RetryPolicy = POLICY,
) -> None:
    n.record_failure(
        n.updated_at + STEP,
        provider=provider,
        error_class=error_class,
        message=msg,
        policy=policy,
        random=half,
    )


def test_a_permanent_failure_falls_back_to_the_next_channel_with_its_address_and_content() -> None:
    n = push_with_fallbacks(EMAIL, SMS)
    n.begin_attempt(T0 + STEP)
    fail(n, ErrorClass.PERMANENT, msg="UNREGISTERED")

    assert n.status is Status.QUEUED
    assert (n.channel, n.address, n.content) == (EMAIL.channel, EMAIL.address, EMAIL.content)
    assert n.content_hash == EMAIL.content.digest()
    assert n.due_at == T0 + 2 * STEP, "the fallback goes now, not after a backoff"
    assert n.fallbacks == [SMS]
    assert "PUSH failed permanently: UNREGISTERED; falling back to EMAIL" in n.status_reason
    [attempt] = n.attempts
    assert (attempt.channel, attempt.outcome) == ("PUSH", AttemptOutcome.PERMANENT_FAILURE)


def test_the_last_channel_failing_permanently_fails_the_notification() -> None:
    n = push_with_fallbacks(EMAIL)
    n.begin_attempt(T0 + STEP)
    fail(n, ErrorClass.PERMANENT)
    n.begin_attempt(n.updated_at + STEP)
    fail(n, ErrorClass.PERMANENT, provider="smtp", msg="550 no such user")

    assert n.status is Status.FAILED
    assert [a.channel for a in n.attempts] == ["PUSH", "EMAIL"]
    assert "550 no such user" in n.status_reason


def test_transient_failures_retry_the_same_channel_and_do_not_fall_back() -> None:
    n = push_with_fallbacks(EMAIL)
    n.begin_attempt(T0 + STEP)
    fail(n, ErrorClass.TRANSIENT)
    assert (n.status, n.channel) == (Status.QUEUED, Channel.PUSH)
    assert n.due_at > n.updated_at, "a transient failure waits for its backoff"


def test_each_channel_gets_its_own_retry_budget() -> None:
    n = push_with_fallbacks(EMAIL)
    n.begin_attempt(T0 + STEP)
    fail(n, ErrorClass.TRANSIENT)
    n.begin_attempt(n.due_at)
    fail(n, ErrorClass.PERMANENT)
    assert n.channel is Channel.EMAIL
    assert n.attempts_this_round == 0

    n.begin_attempt(n.due_at)
    fail(n, ErrorClass.TRANSIENT, provider="smtp")
    assert n.status is Status.QUEUED, "EMAIL has used 1 of its 2 attempts"
    n.begin_attempt(n.due_at)
    fail(n, ErrorClass.TRANSIENT, provider="smtp")
    assert n.status is Status.FAILED


def test_failed_over_attempts_are_recorded_but_do_not_use_the_budget() -> None:
    n = push_with_fallbacks()
    n.begin_attempt(T0 + STEP)
    n.record_failover(T0 + 2 * STEP, provider="fcm", message="503 UNAVAILABLE")
    n.record_success(T0 + 3 * STEP, DeliveryResult("fcm-backup", "m-1"))

    first, second = n.attempts
    assert (first.outcome, first.provider, first.error_class) == (
        AttemptOutcome.FAILED_OVER,
        "fcm",
        ErrorClass.PROVIDER_DOWN,
    )
    assert (second.outcome, second.provider, second.started_at) == (
        AttemptOutcome.ACCEPTED,
        "fcm-backup",
        T0 + 2 * STEP,
    )
    assert n.status is Status.SENT
    assert n.attempts_this_round == 1


def test_a_maybe_accepted_attempt_pins_its_provider() -> None:
    n = push_with_fallbacks(EMAIL)
    assert n.pinned_provider is None
    n.begin_attempt(T0 + STEP)
    fail(n, ErrorClass.MAYBE_ACCEPTED, provider="apns", msg="no answer within 10s")
    assert n.status is Status.QUEUED
    assert n.pinned_provider == "apns"

    n.begin_attempt(n.due_at)
    fail(n, ErrorClass.PROVIDER_DOWN, provider="apns", policy=RetryPolicy(max_attempts=5))
    assert n.pinned_provider == "apns", "a later clear failure does not prove the first one lost"


def test_channels_skipped_at_accept_time_are_named_in_the_record() -> None:
    n = push_with_fallbacks(skipped=("SMS skipped: recipient has no usable phone",))
    assert n.status is Status.QUEUED
    assert n.status_reason == "SMS skipped: recipient has no usable phone"


def test_a_chain_repeating_a_channel_is_refused() -> None:
    new = replace(new_notification(Channel.PUSH), fallbacks=(EMAIL, EMAIL))
    assert [v.field for v in validate_new(new, T0)] == ["fallback_channels[1]"]
    wrong = replace(
        new_notification(Channel.PUSH), fallbacks=(replace(EMAIL, address=SMS.address),)
    )
    assert [v.field for v in validate_new(wrong, T0)] == ["fallback_channels[0]"]
    self_loop = replace(
        new_notification(Channel.PUSH),
        fallbacks=(replace(EMAIL, channel=Channel.PUSH, address=None),),
    )
    assert [v.field for v in validate_new(self_loop, T0)] == ["fallback_channels[0]"]


def test_erasure_drops_the_fallback_routes_personal_data() -> None:
    n = push_with_fallbacks(EMAIL, SMS)
    n.erase(T0 + STEP)
    assert n.fallbacks == []
    assert n.status is Status.CANCELLED


def test_no_fall_back_once_the_channel_may_already_have_delivered_it() -> None:
    n = push_with_fallbacks(EMAIL)
    n.begin_attempt(T0 + STEP)
    fail(n, ErrorClass.MAYBE_ACCEPTED, provider="apns", policy=RetryPolicy(max_attempts=5))
    n.begin_attempt(n.due_at)
    fail(n, ErrorClass.PERMANENT, provider="apns", msg="BadDeviceToken")

    assert (n.status, n.channel) == (Status.FAILED, Channel.PUSH)
    assert "BadDeviceToken" in n.status_reason
