"""What the send and delivery use cases report as notifications pass through them (metrics).

Observers are told, never asked: they return nothing, and the use cases guard every call, so
a broken observer can cost a data point but never a delivery.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

from domain.notification import Channel, ErrorClass, Priority

log = logging.getLogger(__name__)


class AttemptResult(enum.StrEnum):
    """How one provider request ended."""

    ACCEPTED = "accepted"
    # PROVIDER_DOWN with another provider of the channel tried at once in the same attempt.
    FAILED_OVER = "failed_over"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    # PROVIDER_DOWN as the attempt's last word: no other provider was left to try.
    PROVIDER_DOWN = "provider_down"
    MAYBE_ACCEPTED = "maybe_accepted"

    @classmethod
    def of_failure(cls, error_class: ErrorClass) -> AttemptResult:
        return _FAILURES.get(error_class, cls.TRANSIENT)


_FAILURES = {
    ErrorClass.TRANSIENT: AttemptResult.TRANSIENT,
    ErrorClass.PERMANENT: AttemptResult.PERMANENT,
    ErrorClass.PROVIDER_DOWN: AttemptResult.PROVIDER_DOWN,
    ErrorClass.MAYBE_ACCEPTED: AttemptResult.MAYBE_ACCEPTED,
}


class DeliveryOutcome(enum.StrEnum):
    """Where a worker's handling of a notification left it."""

    # A provider accepted it (for the in-app inbox, acceptance is delivery).
    SENT = "sent"
    # Back in the queue for another attempt on the same channel.
    RETRY = "retry"
    # Failed for good on this channel; the next channel of its fallback chain is queued.
    FALLBACK = "fallback"
    FAILED = "failed"
    EXPIRED = "expired"


class AcceptanceOutcome(enum.StrEnum):
    """What the API did with a new send request."""

    QUEUED = "queued"
    SUPPRESSED = "suppressed"
    # Folded into an identical earlier notification (the duplicate window).
    DEDUPLICATED = "deduplicated"


class DeliveryObserver(Protocol):
    def attempt_finished(self, channel: Channel, provider: str, result: AttemptResult) -> None:
        """One provider request ended; a failover chain reports each provider it tried."""
        ...

    def notification_handled(
        self,
        channel: Channel,
        provider: str,
        outcome: DeliveryOutcome,
        latency: timedelta | None = None,
    ) -> None:
        """A worker settled or requeued a notification. ``channel`` is the one it was tried on,
        ``provider`` the last one tried ('' if none was); ``latency`` (SENT only) runs from
        when it was due to be sent (its scheduled time, else its creation) to the acceptance."""
        ...


class AcceptanceObserver(Protocol):
    def notification_accepted(
        self, channel: Channel, priority: Priority, outcome: AcceptanceOutcome
    ) -> None:
        """A new notification was stored (replays of an earlier request are not new)."""
        ...


class NoObserver:
    """The default: observes nothing."""

    def attempt_finished(self, channel: Channel, provider: str, result: AttemptResult) -> None:
        pass

    def notification_handled(
        self,
        channel: Channel,
        provider: str,
        outcome: DeliveryOutcome,
        latency: timedelta | None = None,
    ) -> None:
        pass

    def notification_accepted(
        self, channel: Channel, priority: Priority, outcome: AcceptanceOutcome
    ) -> None:
        pass


def tell(report: Callable[[], None]) -> None:
    """Make one observer call: its failure is logged, never raised into the use case."""
    try:
        report()
    except Exception:
        log.warning("an observer failed; one data point is lost", exc_info=True)
