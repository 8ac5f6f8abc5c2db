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


class ErrorClass(enum.StrEnum):
    NONE = ""
    TRANSIENT = "TRANSIENT"
    PERMANENT = "PERMANENT"
    PROVIDER_DOWN = "PROVIDER_DOWN"
    LEASE_LOST = "LEASE_LOST"


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
