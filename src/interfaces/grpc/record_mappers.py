"""Translation for the record's RPCs: ListNotifications, TrackEngagement and GetStats."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from application.ports.notification_queries import DeliveryStats, NotificationQuery, StatsReport
from application.use_cases.engagement import Tracked
from domain.errors import Violations
from domain.notification import Channel, EngagementAction, Notification, Priority, Status
from interfaces.grpc.gen.notify.v1 import notification_pb2 as pb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc
from interfaces.grpc.mappers import (
    CHANNELS_TO_PB,
    ENGAGEMENT_TO_PB,
    PRIORITIES,
    STATUS_TO_PB,
    channel_from_pb,
    notification_to_pb,
    time_from_pb,
)

STATUSES = {number: status for status, number in STATUS_TO_PB.items()}
ENGAGEMENTS = {number: action for action, number in ENGAGEMENT_TO_PB.items()}


def _optional_channel(value: int, v: Violations) -> Channel | None:
    return channel_from_pb(value, v) if value != pb.CHANNEL_UNSPECIFIED else None


def notification_query(request: svc.ListNotificationsRequest) -> NotificationQuery:
    v = Violations()
    statuses: set[Status] = set()
    for i, value in enumerate(request.statuses):
        if value in STATUSES:
            statuses.add(STATUSES[value])
        else:
            v.add(f"statuses[{i}]", f"unset or unknown status value {value}")
    channel = _optional_channel(request.channel, v)
    priority: Priority | None = None
    if request.priority != pb.PRIORITY_UNSPECIFIED:
        priority = PRIORITIES.get(request.priority)
        if priority is None:
            v.add("priority", f"unknown priority value {request.priority}")
    created_from = time_from_pb(request, "start_time", v)
    created_before = time_from_pb(request, "end_time", v)
    v.raise_if_any()
    return NotificationQuery(
        user_id=request.user_id,
        statuses=frozenset(statuses),
        channel=channel,
        category=request.category,
        priority=priority,
        caller_service=request.caller_service,
        created_from=created_from,
        created_before=created_before,
    )


def list_response(page: Sequence[Notification], token: str) -> svc.ListNotificationsResponse:
    return svc.ListNotificationsResponse(
        notifications=[notification_to_pb(n) for n in page], next_page_token=token
    )


@dataclass(frozen=True, slots=True)
class EngagementInput:
    notification_id: str
    # None when unset: the use case names the missing field.
    action: EngagementAction | None
    event_time: datetime | None


def engagement_input(request: svc.TrackEngagementRequest) -> EngagementInput:
    v = Violations()
    action = ENGAGEMENTS.get(request.action)
    if action is None and request.action != pb.ENGAGEMENT_ACTION_UNSPECIFIED:
        v.add("action", f"unknown engagement action value {request.action}")
    event_time = time_from_pb(request, "event_time", v)
    v.raise_if_any()
    return EngagementInput(request.id, action, event_time)


def track_response(tracked: Tracked) -> svc.TrackEngagementResponse:
    return svc.TrackEngagementResponse(
        notification=notification_to_pb(tracked.notification), recorded=tracked.recorded
    )


@dataclass(frozen=True, slots=True)
class StatsInput:
    start: datetime | None
    end: datetime | None
    channel: Channel | None
    category: str


def stats_input(request: svc.GetStatsRequest) -> StatsInput:
    v = Violations()
    start = time_from_pb(request, "start_time", v)
    end = time_from_pb(request, "end_time", v)
    channel = _optional_channel(request.channel, v)
    v.raise_if_any()
    return StatsInput(start, end, channel, request.category)


def _delivery_stats(s: DeliveryStats) -> svc.DeliveryStats:
    return svc.DeliveryStats(
        channel=CHANNELS_TO_PB[s.channel] if s.channel is not None else pb.CHANNEL_UNSPECIFIED,  # type: ignore[arg-type]
        provider=s.provider,
        category=s.category,
        total_count=s.total_count,
        status_counts=[
            svc.StatusCount(status=STATUS_TO_PB[status], count=count)  # type: ignore[arg-type]
            for status, count in sorted(s.status_counts.items(), key=lambda c: STATUS_TO_PB[c[0]])
            if count
        ],
        success_rate=s.success_rate,
        delivery_latency_p50_ms=s.latency_p50_ms,
        delivery_latency_p95_ms=s.latency_p95_ms,
        delivery_latency_p99_ms=s.latency_p99_ms,
        opened_count=s.opened_count,
        clicked_count=s.clicked_count,
        open_rate=s.open_rate,
        click_rate=s.click_rate,
    )


def stats_response(report: StatsReport) -> svc.GetStatsResponse:
    return svc.GetStatsResponse(
        groups=[_delivery_stats(g) for g in report.groups], total=_delivery_stats(report.total)
    )
