"""Builders for Notification aggregates in any status, reached through the aggregate's own verbs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from domain.notification import (
    Address,
    Channel,
    Content,
    DeliveryResult,
    ErrorClass,
    NewNotification,
    Notification,
    Priority,
    RetryPolicy,
    Status,
    StatusChange,
)

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
STEP = timedelta(seconds=1)

ADDRESSES: dict[Channel, Address | None] = {
    Channel.EMAIL: Address("email", "user@example.com"),
    Channel.SMS: Address("phone", "+14155550123"),
    Channel.PUSH: Address("device_token", "token-abc"),
    Channel.WEBHOOK: Address("webhook_url", "https://example.com/hook"),
    Channel.IN_APP: None,
}


def half() -> float:
    return 0.5


def new_notification(
    channel: Channel = Channel.IN_APP,
    *,
    request_id: str = "req-1",
    expires_at: datetime | None = None,
    scheduled_at: datetime | None = None,
) -> NewNotification:
    return NewNotification(
        request_id=request_id,
        user_id="user-42",
        channel=channel,
        priority=Priority.HIGH,
        category="order_shipped",
        content=Content("Shipped", "Your order is on its way"),
        address=ADDRESSES[channel],
        scheduled_at=scheduled_at,
        expires_at=expires_at,
    )


def accepted(
    channel: Channel = Channel.IN_APP,
    *,
    now: datetime = T0,
    expires_at: datetime | None = None,
    scheduled_at: datetime | None = None,
) -> Notification:
    return Notification.accept(
        new_notification(channel, expires_at=expires_at, scheduled_at=scheduled_at),
        id="n-1",
        tenant_id="tenant-a",
        caller="orders",
        fingerprint="fp",
        now=now,
    )


def pending(
    channel: Channel = Channel.IN_APP, *, expires_at: datetime | None = None
) -> Notification:
    """A notification as it exists before accept() queues it (no public verb stops there)."""
    n = accepted(channel, expires_at=expires_at)
    n.status = Status.PENDING
    n.status_reason = ""
    n.history = [StatusChange(Status.PENDING, T0)]
    return n


def fail(n: Notification, now: datetime, error_class: ErrorClass, policy: RetryPolicy) -> None:
    n.record_failure(
        now,
        provider="fake",
        error_class=error_class,
        message="boom",
        policy=policy,
        random=half,
    )


def in_status(
    status: Status, channel: Channel = Channel.IN_APP, *, expires_at: datetime | None = None
) -> Notification:
    """A notification in ``status``, driven there through its verbs starting at T0. Every step
    advances one second, so the result's updated_at is at most T0 + 3s."""
    if status is Status.PENDING:
        return pending(channel, expires_at=expires_at)
    if status is Status.SUPPRESSED:
        n = pending(channel, expires_at=expires_at)
        n.suppress(T0 + STEP, "opted out")
        return n
    n = accepted(channel, expires_at=expires_at)
    steps: dict[Status, list[Callable[[Notification, datetime], object]]] = {
        Status.QUEUED: [],
        Status.CANCELLED: [lambda n, t: n.cancel(t)],
        Status.SENDING: [lambda n, t: n.begin_attempt(t)],
        Status.SENT: [
            lambda n, t: n.begin_attempt(t),
            lambda n, t: n.record_success(t, DeliveryResult("fake", "msg-1")),
        ],
        Status.DELIVERED: [
            lambda n, t: n.begin_attempt(t),
            lambda n, t: n.record_success(t, DeliveryResult("fake", "msg-1")),
            lambda n, t: n.mark_delivered(t),
        ],
        Status.FAILED: [
            lambda n, t: n.begin_attempt(t),
            lambda n, t: fail(n, t, ErrorClass.PERMANENT, RetryPolicy()),
        ],
    }
    if status is Status.READ:
        # Read works for IN_APP only; reach READ through the inbox verbs.
        n = in_status(Status.DELIVERED, Channel.IN_APP, expires_at=expires_at)
        n.mark_read(n.updated_at + STEP)
        return n
    if status is Status.EXPIRED:
        # An expiry a moment after acceptance, then expire() once it has passed.
        n = accepted(channel, expires_at=expires_at or T0 + STEP)
        assert n.expires_at is not None
        n.expire(n.expires_at)
        return n
    t = T0
    for step in steps[status]:
        t += STEP
        step(n, t)
    assert n.status is status
    return n
