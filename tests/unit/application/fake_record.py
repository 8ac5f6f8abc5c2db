"""The listing and statistics of FakeNotificationRepository, computed in Python the way the
SQL repository computes them (same filters, order, grouping and percentile interpolation)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import groupby

from application.ports.notification_queries import (
    DeliveryStats,
    NotificationQuery,
    StatsQuery,
    StatsReport,
)
from application.ports.repositories import PageCursor
from domain.notification import PROVIDER_ACCEPTED, Channel, EngagementAction, Notification, Status


def matches(
    n: Notification, tenant_id: str, q: NotificationQuery, after: PageCursor | None
) -> bool:
    return (
        n.tenant_id == tenant_id
        and (not q.user_id or n.user_id == q.user_id)
        and (not q.statuses or n.status in q.statuses)
        and (q.channel is None or n.channel is q.channel)
        and (not q.category or n.category == q.category)
        and (q.priority is None or n.priority is q.priority)
        and (not q.caller_service or n.caller == q.caller_service)
        and (q.created_from is None or n.created_at >= q.created_from)
        and (q.created_before is None or n.created_at < q.created_before)
        and (after is None or (n.created_at, n.id) < (after.at, after.id))
    )


def newest_first(found: Iterable[Notification], limit: int) -> list[Notification]:
    return sorted(found, key=lambda n: (n.created_at, n.id), reverse=True)[:limit]


def in_window(n: Notification, tenant_id: str, q: StatsQuery) -> bool:
    return (
        n.tenant_id == tenant_id
        and q.start <= n.created_at < q.end
        and (q.channel is None or n.channel is q.channel)
        and (not q.category or n.category == q.category)
    )


def percentile_cont(values: Sequence[float], fraction: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the two nearest ranks."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _provider(n: Notification) -> str:
    return n.last_provider


def _summary(
    rows: list[Notification], channel: Channel | None, provider: str, category: str
) -> DeliveryStats:
    counts: dict[Status, int] = {}
    for n in rows:
        counts[n.status] = counts.get(n.status, 0) + 1
    latencies: list[float] = []
    opened = clicked = 0
    for n in rows:
        accepted = n.accepted_attempt
        if accepted is None or accepted.finished_at is None:
            continue
        due = max(n.created_at, n.scheduled_at or n.created_at)
        latencies.append((accepted.finished_at - due).total_seconds() * 1000)
        engaged = n.engagements
        if (
            EngagementAction.OPENED in engaged
            or EngagementAction.CLICKED in engaged
            or n.status is Status.READ
        ):
            opened += 1
        if EngagementAction.CLICKED in engaged and n.status in PROVIDER_ACCEPTED:
            clicked += 1
    p50, p95, p99 = (percentile_cont(latencies, f) if latencies else 0.0 for f in (0.5, 0.95, 0.99))
    return DeliveryStats(
        channel=channel,
        provider=provider,
        category=category,
        status_counts=counts,
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        latency_p99_ms=p99,
        opened_count=opened,
        clicked_count=clicked,
    )


def report(rows: list[Notification]) -> StatsReport:
    def key(n: Notification) -> tuple[str, str, str]:
        return (n.channel.value, _provider(n), n.category)

    groups = [
        _summary(list(members), Channel(channel), provider, category)
        for (channel, provider, category), members in groupby(sorted(rows, key=key), key=key)
    ]
    return StatsReport(groups, _summary(rows, None, "", ""))
