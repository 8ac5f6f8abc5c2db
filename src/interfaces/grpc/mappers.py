"""Translation between protobuf messages and the application's commands and aggregates."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from application.ports.repositories import DeadLetterQuery, InboxEventKind
from application.use_cases.bulk_send import BulkOutcome
from application.use_cases.commands import (
    AddressInput,
    BulkRecipientInput,
    BulkSendCommand,
    SendNotificationCommand,
    TemplateInput,
)
from application.use_cases.inbox_stream import InboxUpdate
from domain.errors import ValidationFailed, Violations
from domain.notification import (
    AttemptOutcome,
    Channel,
    Content,
    EngagementAction,
    Notification,
    Priority,
    Status,
)
from interfaces.grpc.gen.notify.v1 import notification_pb2 as pb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc

CHANNELS: dict[int, Channel] = {
    pb.CHANNEL_EMAIL: Channel.EMAIL,
    pb.CHANNEL_SMS: Channel.SMS,
    pb.CHANNEL_PUSH: Channel.PUSH,
    pb.CHANNEL_WEBHOOK: Channel.WEBHOOK,
    pb.CHANNEL_IN_APP: Channel.IN_APP,
}
CHANNELS_TO_PB = {v: k for k, v in CHANNELS.items()}
PRIORITIES: dict[int, Priority] = {
    pb.PRIORITY_LOW: Priority.LOW,
    pb.PRIORITY_MEDIUM: Priority.MEDIUM,
    pb.PRIORITY_HIGH: Priority.HIGH,
    pb.PRIORITY_CRITICAL: Priority.CRITICAL,
}
PRIORITIES_TO_PB = {v: k for k, v in PRIORITIES.items()}
STATUS_TO_PB: dict[Status, int] = {
    s: pb.NotificationStatus.Value(f"NOTIFICATION_STATUS_{s.value}") for s in Status
}
OUTCOME_TO_PB: dict[AttemptOutcome, int] = {
    o: pb.AttemptOutcome.Value(f"ATTEMPT_OUTCOME_{o.value}") for o in AttemptOutcome
}
ENGAGEMENT_TO_PB: dict[EngagementAction, int] = {
    a: pb.EngagementAction.Value(f"ENGAGEMENT_ACTION_{a.value}") for a in EngagementAction
}


def channel_from_pb(value: int, v: Violations) -> Channel:
    """A required ``channel`` field; unset or unknown adds a violation (and returns a stand-in
    so the other fields are still checked)."""
    if value == pb.CHANNEL_UNSPECIFIED:
        v.add("channel", "required: one of EMAIL, SMS, PUSH, WEBHOOK, IN_APP")
    elif value not in CHANNELS:
        v.add("channel", f"unknown channel value {value}")
    return CHANNELS.get(value, Channel.IN_APP)


def _fallback_channels(values: Sequence[int], v: Violations) -> tuple[Channel, ...]:
    chain: list[Channel] = []
    for i, value in enumerate(values):
        if value not in CHANNELS:
            v.add(f"fallback_channels[{i}]", f"unknown or unset channel value {value}")
        else:
            chain.append(CHANNELS[value])
    return tuple(chain)


def _priority(value: int, v: Violations) -> Priority:
    if value == pb.PRIORITY_UNSPECIFIED:
        return Priority.MEDIUM
    if value not in PRIORITIES:
        v.add("priority", f"unknown priority value {value}")
    return PRIORITIES.get(value, Priority.MEDIUM)


def _plain(value: Any) -> Any:
    """Struct numbers arrive as floats; 3.0 renders as "3.0", so whole numbers become ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(x) for k, x in value.items()}
    if isinstance(value, list):
        return [_plain(x) for x in value]
    return value


def struct_to_dict(struct: Struct, field: str = "variables") -> dict[str, Any]:
    """A Struct as plain JSON values; INVALID_ARGUMENT naming ``field`` for NaN or Infinity,
    which protobuf carries but JSON (and so the record) cannot."""
    try:
        return {k: _plain(v) for k, v in json_format.MessageToDict(struct).items()}
    except ValueError as error:
        raise ValidationFailed.single(
            field, "numbers must be finite: NaN and Infinity are not JSON"
        ) from error


def time_from_pb(message: Any, field: str, v: Violations) -> datetime | None:
    """An optional Timestamp ``field`` as an aware UTC datetime (None when unset); one out of
    range adds a violation naming the field."""
    if not message.HasField(field):
        return None
    ts: Timestamp = getattr(message, field)
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as error:
        v.add(field, f"not a valid timestamp: {error}")
        return None


def _address(message: Any, field: str = "address") -> AddressInput | None:
    if not message.HasField(field):
        return None
    address: pb.Address = getattr(message, field)
    kind = address.WhichOneof("kind")
    if kind is None:
        return AddressInput("", "")
    return AddressInput(kind, getattr(address, kind))


def _content(message: Any) -> Content | None:
    if not message.HasField("content"):
        return None
    c = message.content
    return Content(c.title, c.body, c.html, struct_to_dict(c.data, "content.data"))


def _template(message: Any) -> TemplateInput | None:
    if not message.HasField("template"):
        return None
    t = message.template
    return TemplateInput(t.name, struct_to_dict(t.variables, "template.variables"), t.locale)


def send_command(request: svc.SendNotificationRequest) -> SendNotificationCommand:
    v = Violations()
    channel = channel_from_pb(request.channel, v)
    priority = _priority(request.priority, v)
    scheduled_at = time_from_pb(request, "schedule_time", v)
    expires_at = time_from_pb(request, "expire_time", v)
    address = _address(request)
    if address is not None and not address.kind:
        v.add("address", "set one of email, phone, device_token, webhook_url")
    fallbacks = _fallback_channels(request.fallback_channels, v)
    v.raise_if_any()
    return SendNotificationCommand(
        request_id=request.request_id,
        user_id=request.user_id,
        channel=channel,
        priority=priority,
        category=request.category,
        content=_content(request),
        template=_template(request),
        address=address,
        scheduled_at=scheduled_at,
        expires_at=expires_at,
        metadata=dict(request.metadata),
        fallback_channels=fallbacks,
    )


def bulk_command(request: svc.BulkSendRequest) -> BulkSendCommand:
    v = Violations()
    channel = channel_from_pb(request.channel, v)
    priority = _priority(request.priority, v)
    scheduled_at = time_from_pb(request, "schedule_time", v)
    expires_at = time_from_pb(request, "expire_time", v)
    fallbacks = _fallback_channels(request.fallback_channels, v)
    v.raise_if_any()
    return BulkSendCommand(
        request_id=request.request_id,
        job_id=request.job_id,
        channel=channel,
        priority=priority,
        category=request.category,
        content=_content(request),
        template=_template(request),
        scheduled_at=scheduled_at,
        expires_at=expires_at,
        metadata=dict(request.metadata),
        fallback_channels=fallbacks,
        recipients=[
            BulkRecipientInput(
                user_id=r.user_id,
                address=_address(r),
                variables=struct_to_dict(r.variables, f"recipients[{i}].variables"),
                locale=r.locale,
            )
            for i, r in enumerate(request.recipients)
        ],
    )


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def content_to_pb(content: Content) -> pb.Content:
    message = pb.Content(title=content.title, body=content.body, html=content.html)
    if content.data:
        message.data.update(dict(content.data))
    return message


def notification_to_pb(n: Notification) -> pb.Notification:
    message = pb.Notification(
        id=n.id,
        request_id=n.request_id,
        user_id=n.user_id,
        channel=CHANNELS_TO_PB[n.channel],  # type: ignore[arg-type]
        priority=PRIORITIES_TO_PB[n.priority],  # type: ignore[arg-type]
        category=n.category,
        content=content_to_pb(n.content),
        content_hash=n.content_hash,
        erase_time=timestamp(n.erased_at),
        template_name=n.template_name,
        template_version=n.template_version,
        locale=n.locale,
        status=STATUS_TO_PB[n.status],  # type: ignore[arg-type]
        status_reason=n.status_reason,
        create_time=timestamp(n.created_at),
        update_time=timestamp(n.updated_at),
        schedule_time=timestamp(n.scheduled_at),
        expire_time=timestamp(n.expires_at),
        metadata=n.metadata,
        caller_service=n.caller,
        tenant_id=n.tenant_id,
        bulk_job_id=n.bulk_job_id or "",
        status_history=[
            pb.StatusChange(status=STATUS_TO_PB[c.status], time=timestamp(c.at), reason=c.reason)  # type: ignore[arg-type]
            for c in n.history
        ],
        attempts=[
            pb.DeliveryAttempt(
                number=a.number,
                start_time=timestamp(a.started_at),
                end_time=timestamp(a.finished_at),
                provider=a.provider,
                outcome=OUTCOME_TO_PB[a.outcome],  # type: ignore[arg-type]
                error_class=a.error_class.value,
                error_message=a.error_message,
                latency_ms=a.latency_ms or 0,
                provider_message_id=a.provider_message_id,
                channel=CHANNELS_TO_PB.get(Channel(a.channel), pb.CHANNEL_UNSPECIFIED)  # type: ignore[arg-type]
                if a.channel
                else pb.CHANNEL_UNSPECIFIED,
            )
            for a in n.attempts
        ],
        fallback_channels=[CHANNELS_TO_PB[r.channel] for r in n.fallbacks],  # type: ignore[misc]
        engagements=[
            pb.Engagement(action=ENGAGEMENT_TO_PB[action], time=timestamp(at))  # type: ignore[arg-type]
            for action, at in sorted(
                n.engagements.items(), key=lambda e: (e[1], ENGAGEMENT_TO_PB[e[0]])
            )
        ],
    )
    if n.address is not None:
        setattr(message.address, n.address.kind, n.address.value)
    return message


def bulk_response(outcome: BulkOutcome) -> svc.BulkSendResponse:
    results = []
    for r in outcome.results:
        result = svc.BulkSendResult(index=r.index, user_id=r.user_id)
        if r.notification is not None:
            result.notification_id = r.notification.id
            result.status = STATUS_TO_PB[r.notification.status]  # type: ignore[assignment]
            result.status_reason = r.notification.status_reason
            result.deduplicated = r.deduplicated
        elif r.refusal is not None:
            result.refusal.CopyFrom(
                svc.RecipientRefusal(
                    code=r.refusal.code, field=r.refusal.field, description=r.refusal.description
                )
            )
        results.append(result)
    return svc.BulkSendResponse(
        job_id=outcome.job.id,
        results=results,
        accepted_count=outcome.accepted,
        refused_count=len(outcome.results) - outcome.accepted,
    )


def dead_letter_query(request: svc.ListDeadLettersRequest) -> DeadLetterQuery:
    v = Violations()
    channel = None
    if request.channel != pb.CHANNEL_UNSPECIFIED:
        channel = channel_from_pb(request.channel, v)
    failed_from = time_from_pb(request, "start_time", v)
    failed_before = time_from_pb(request, "end_time", v)
    v.raise_if_any()
    return DeadLetterQuery(
        channel=channel,
        category=request.category,
        error_class=request.error_class,
        failed_from=failed_from,
        failed_before=failed_before,
    )


INBOX_KINDS_TO_PB: dict[InboxEventKind, int] = {
    k: svc.InboxEventKind.Value(f"INBOX_EVENT_KIND_{k.value}") for k in InboxEventKind
}


def inbox_update_to_pb(update: InboxUpdate) -> svc.StreamInboxResponse:
    message = svc.StreamInboxResponse(
        cursor=update.cursor,
        kind=INBOX_KINDS_TO_PB[update.kind],  # type: ignore[arg-type]
        unread_count=update.unread_count,
        read_ids=update.read_ids,
    )
    if update.notification is not None:
        message.notification.CopyFrom(notification_to_pb(update.notification))
    return message
