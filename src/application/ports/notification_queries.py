"""What the record is asked: which notifications to list, and what to summarise."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from domain.notification import PROVIDER_ACCEPTED, Channel, Priority, Status

# Statuses in which sending is decided: a provider took it, or none ever will.
_NOT_SENT = (Status.FAILED, Status.EXPIRED)


@dataclass(frozen=True, slots=True)
class NotificationQuery:
    """Filters for listing notifications; each None or empty means "any", and they combine
    with AND. ``statuses`` is any of them."""

    user_id: str = ""
    statuses: frozenset[Status] = frozenset()
    channel: Channel | None = None
    category: str = ""
    priority: Priority | None = None
    caller_service: str = ""
    created_from: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class StatsQuery:
    """Notifications created in [start, end), optionally of one channel or category."""

    start: datetime
    end: datetime
    channel: Channel | None = None
    category: str = ""


@dataclass(frozen=True, slots=True)
class DeliveryStats:
    """One group's figures. ``channel`` None (and provider, category empty) for the total;
    provider '' for the notifications no provider accepted. Latencies are 0 with none sent."""

    channel: Channel | None
    provider: str
    category: str
    status_counts: Mapping[Status, int] = field(default_factory=dict)
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    latency_p99_ms: float = 0.0
    opened_count: int = 0
    clicked_count: int = 0

    @property
    def total_count(self) -> int:
        return sum(self.status_counts.values())

    @property
    def accepted_count(self) -> int:
        return sum(self.status_counts.get(s, 0) for s in PROVIDER_ACCEPTED)

    @property
    def decided_count(self) -> int:
        return self.accepted_count + sum(self.status_counts.get(s, 0) for s in _NOT_SENT)

    @property
    def success_rate(self) -> float:
        return _ratio(self.accepted_count, self.decided_count)

    @property
    def open_rate(self) -> float:
        return _ratio(self.opened_count, self.accepted_count)

    @property
    def click_rate(self) -> float:
        return _ratio(self.clicked_count, self.accepted_count)


@dataclass(frozen=True, slots=True)
class StatsReport:
    """Groups ordered by channel, provider, category; the total over all of them."""

    groups: list[DeliveryStats]
    total: DeliveryStats


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0
