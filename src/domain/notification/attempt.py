"""One try at handing a notification to a provider, and how it ended."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime


class AttemptOutcome(enum.StrEnum):
    IN_PROGRESS = "IN_PROGRESS"
    ACCEPTED = "ACCEPTED"
    TRANSIENT_FAILURE = "TRANSIENT_FAILURE"
    PERMANENT_FAILURE = "PERMANENT_FAILURE"
    # The worker holding the attempt vanished (crash, lease lost) before recording an outcome.
    ABANDONED = "ABANDONED"
    # The provider failed before it could have accepted; the next provider was tried at once.
    FAILED_OVER = "FAILED_OVER"


class ErrorClass(enum.StrEnum):
    NONE = ""
    TRANSIENT = "TRANSIENT"
    PERMANENT = "PERMANENT"
    PROVIDER_DOWN = "PROVIDER_DOWN"
    LEASE_LOST = "LEASE_LOST"
    # The request went out but no answer came (timeout, dropped connection): the provider may
    # have accepted it. Retried on the same provider with the same reference, never elsewhere.
    MAYBE_ACCEPTED = "MAYBE_ACCEPTED"


class AddressRejection(enum.StrEnum):
    """What a provider said about the address itself, beyond this one notification."""

    # The device token is unregistered (FCM UNREGISTERED, APNs 410) or the endpoint is gone
    # (webhook 410): the recipient's record stops using it.
    GONE = "GONE"
    # The number (or mailbox) opted out at the provider (e.g. SMS STOP): later sends to it are
    # suppressed.
    UNSUBSCRIBED = "UNSUBSCRIBED"


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    number: int
    started_at: datetime
    provider: str = ""
    outcome: AttemptOutcome = AttemptOutcome.IN_PROGRESS
    finished_at: datetime | None = None
    error_class: ErrorClass = ErrorClass.NONE
    error_message: str = ""
    provider_message_id: str = ""
    # The channel the attempt was made on ('' in records older than fallback chains).
    channel: str = ""

    @property
    def latency_ms(self) -> int | None:
        if self.finished_at is None:
            return None
        return int((self.finished_at - self.started_at).total_seconds() * 1000)

    def finish(
        self,
        at: datetime,
        outcome: AttemptOutcome,
        *,
        provider: str = "",
        error_class: ErrorClass = ErrorClass.NONE,
        error_message: str = "",
        provider_message_id: str = "",
    ) -> DeliveryAttempt:
        return replace(
            self,
            finished_at=at,
            outcome=outcome,
            provider=provider or self.provider,
            error_class=error_class,
            error_message=error_message[:1000],
            provider_message_id=provider_message_id,
        )


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What a sender reports when the provider accepted the notification."""

    provider: str
    provider_message_id: str = ""
    # True where acceptance is delivery (the in-app inbox): there is no later receipt.
    delivered: bool = False
