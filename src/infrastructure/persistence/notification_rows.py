"""Translation between the Notification aggregate and its row in ``notifications``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import RowMapping

from domain.notification import (
    Address,
    AttemptOutcome,
    Channel,
    Content,
    DeliveryAttempt,
    EngagementAction,
    ErrorClass,
    Notification,
    Priority,
    Route,
    Status,
    StatusChange,
)


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# The JSON columns below keep their times as datetimes: the engine's json_dumps (orjson)
# writes them in C exactly as isoformat() would, and isoformat() in Python took half of
# to_row's time, which runs for every notification written.


def history_to_json(history: list[StatusChange]) -> list[dict[str, Any]]:
    return [{"s": c.status.value, "at": c.at, "r": c.reason} for c in history]


def attempts_to_json(attempts: list[DeliveryAttempt]) -> list[dict[str, Any]]:
    return [
        {
            "n": a.number,
            "start": a.started_at,
            "end": a.finished_at,
            "provider": a.provider,
            "outcome": a.outcome.value,
            "error_class": a.error_class.value,
            "error": a.error_message,
            "provider_message_id": a.provider_message_id,
            "channel": a.channel,
        }
        for a in attempts
    ]


def engagements_to_json(engagements: dict[EngagementAction, datetime]) -> dict[str, datetime]:
    return {action.value: at for action, at in engagements.items()}


def engagements_from_json(items: dict[str, str]) -> dict[EngagementAction, datetime]:
    return {EngagementAction(action): datetime.fromisoformat(at) for action, at in items.items()}


def fallbacks_to_json(routes: list[Route]) -> list[dict[str, Any]]:
    return [
        {
            "channel": r.channel.value,
            "address_kind": r.address.kind if r.address else None,
            "address_value": r.address.value if r.address else None,
            "title": r.content.title,
            "body": r.content.body,
            "html": r.content.html,
            "data": dict(r.content.data),
        }
        for r in routes
    ]


def fallbacks_from_json(items: list[dict[str, Any]]) -> list[Route]:
    return [
        Route(
            Channel(r["channel"]),
            Address(r["address_kind"], r["address_value"]) if r["address_kind"] else None,
            Content(r["title"], r["body"], r["html"], dict(r["data"])),
        )
        for r in items
    ]


def to_row(n: Notification) -> dict[str, Any]:
    """Every column but ``version`` (the repository manages it)."""
    # Denormalised from the attempts so statistics need not unpack them: who handled it last
    # on its channel (accepted or failed it), and when a provider accepted it.
    accepted = n.accepted_attempt
    return {
        "id": n.id,
        "tenant_id": n.tenant_id,
        "caller_service": n.caller,
        "request_id": n.request_id,
        "request_fingerprint": n.request_fingerprint,
        "bulk_job_id": n.bulk_job_id,
        "user_id": n.user_id,
        "channel": n.channel.value,
        "priority": int(n.priority),
        "category": n.category,
        "title": n.content.title,
        "body": n.content.body,
        "html": n.content.html,
        "data": dict(n.content.data),
        "content_hash": n.content_hash,
        "erased_at": n.erased_at,
        "address_kind": n.address.kind if n.address else None,
        "address_value": n.address.value if n.address else None,
        "template_name": n.template_name,
        "template_version": n.template_version,
        "locale": n.locale,
        "status": n.status.value,
        "status_reason": n.status_reason,
        "created_at": n.created_at,
        "updated_at": n.updated_at,
        "due_at": n.due_at,
        "scheduled_at": n.scheduled_at,
        "expires_at": n.expires_at,
        "metadata": dict(n.metadata),
        "history": history_to_json(n.history),
        "attempts": attempts_to_json(n.attempts),
        "fallbacks": fallbacks_to_json(n.fallbacks),
        "engagements": engagements_to_json(n.engagements),
        "provider": n.last_provider or None,
        "sent_at": accepted.finished_at if accepted is not None else None,
        "cancel_requested_at": n.cancel_requested_at,
    }


def from_row(row: RowMapping) -> Notification:
    address = Address(row["address_kind"], row["address_value"]) if row["address_kind"] else None
    return Notification(
        id=row["id"],
        tenant_id=row["tenant_id"],
        caller=row["caller_service"],
        request_id=row["request_id"],
        request_fingerprint=row["request_fingerprint"],
        bulk_job_id=row["bulk_job_id"],
        user_id=row["user_id"],
        channel=Channel(row["channel"]),
        priority=Priority(row["priority"]),
        category=row["category"],
        content=Content(row["title"], row["body"], row["html"], dict(row["data"])),
        content_hash=row["content_hash"],
        erased_at=row["erased_at"],
        address=address,
        status=Status(row["status"]),
        status_reason=row["status_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        due_at=row["due_at"],
        scheduled_at=row["scheduled_at"],
        expires_at=row["expires_at"],
        metadata=dict(row["metadata"]),
        template_name=row["template_name"],
        template_version=row["template_version"],
        locale=row["locale"],
        history=[
            StatusChange(Status(h["s"]), datetime.fromisoformat(h["at"]), h["r"])
            for h in row["history"]
        ],
        attempts=[
            DeliveryAttempt(
                number=a["n"],
                started_at=datetime.fromisoformat(a["start"]),
                finished_at=_dt(a["end"]),
                provider=a["provider"],
                outcome=AttemptOutcome(a["outcome"]),
                error_class=ErrorClass(a["error_class"]),
                error_message=a["error"],
                provider_message_id=a["provider_message_id"],
                channel=a.get("channel", ""),
            )
            for a in row["attempts"]
        ],
        fallbacks=fallbacks_from_json(row["fallbacks"]),
        engagements=engagements_from_json(row["engagements"]),
        cancel_requested_at=row["cancel_requested_at"],
        version=row["version"],
    )
