"""Channel senders: hand a notification to a provider and say how it went."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from domain.notification import AddressRejection, Channel, DeliveryResult, ErrorClass, Notification


@dataclass(frozen=True, slots=True)
class FailedOver:
    """A provider that failed before it could have accepted, in one delivery, after which the
    channel's next provider was tried at once. Recorded as a FAILED_OVER attempt."""

    provider: str
    message: str
    started_at: datetime
    finished_at: datetime


class DeliveryFailed(Exception):
    """The provider did not accept the notification. ``error_class`` decides what happens next:
    PERMANENT fails (or falls back to the next channel), MAYBE_ACCEPTED is retried on the same
    provider only, anything else is retried with backoff."""

    def __init__(
        self,
        error_class: ErrorClass,
        message: str,
        *,
        provider: str,
        retry_after: timedelta | None = None,
        rejection: AddressRejection | None = None,
        failovers: tuple[FailedOver, ...] = (),
        summary: str | None = None,
    ) -> None:
        self.error_class = error_class
        # Kept in the attempt record: it may quote what the receiver answered.
        self.message = message
        # What a log line may say about it: without the receiver's words (a webhook response
        # body can hold anything, and masking only catches what it recognises).
        self.summary = message if summary is None else summary
        self.provider = provider
        self.retry_after = retry_after
        # What the provider said about the address itself (token gone, number unsubscribed).
        self.rejection = rejection
        self.failovers = failovers
        super().__init__(f"{provider}: {error_class}: {message}")


@dataclass(frozen=True, slots=True)
class Delivered:
    """A provider accepted it, possibly after others failed over."""

    result: DeliveryResult
    failovers: tuple[FailedOver, ...] = ()


class Provider(Protocol):
    """One provider of a channel (smtp, twilio, vonage, fcm, apns, webhook, inbox).

    Raises DeliveryFailed: PROVIDER_DOWN when it certainly did not accept (unreachable, 5xx,
    overloaded), which lets a failover chain try the next provider at once; MAYBE_ACCEPTED
    when the request went out and no answer came; TRANSIENT or PERMANENT otherwise."""

    name: str
    channel: Channel

    async def send(self, notification: Notification) -> DeliveryResult:
        """Must be safe to call again for the same notification: the same reference (the
        notification id) goes to the provider, so it can drop a repeat."""
        ...


class Sender(Protocol):
    """A channel's way out: its providers in order, behind breakers and rate limits."""

    channel: Channel

    async def send(self, notification: Notification) -> Delivered:
        """Deliver, or raise DeliveryFailed (carrying any providers failed over)."""
        ...


class BreakerState(enum.StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


class CircuitBreaker(Protocol):
    """Per-provider circuit breakers whose state every worker shares."""

    async def allow(self, provider: str, now: datetime) -> bool:
        """May a request go to ``provider`` now? CLOSED: yes. OPEN: no, until the cool-down
        has passed; then exactly one caller gets yes (the half-open probe) until it reports."""
        ...

    async def record_success(self, provider: str, now: datetime) -> None:
        """Closes the breaker (a successful probe closes a half-open one)."""
        ...

    async def record_failure(self, provider: str, now: datetime) -> None:
        """Counts a failure in the window; enough of them (or a failed probe) open it."""
        ...

    async def state(self, provider: str, now: datetime) -> BreakerState: ...


class RateLimiter(Protocol):
    """Per-provider request rates every worker shares."""

    async def acquire(self, provider: str, now: datetime) -> timedelta:
        """Take one request slot: zero when taken, else how long until one is free (nothing
        taken). Providers without a configured rate always get zero."""
        ...
