"""Recipients as rows: the JSONB shapes of devices, webhook and preferences.

Times are ISO 8601 with their offset; enums are stored by value. Rows are trusted (they were
checked on the way in), so nothing is validated again on the way out."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, time
from typing import Any

from sqlalchemy import RowMapping

from domain.notification import Address, Channel
from domain.policy import Limits
from domain.recipient import (
    CategoryCap,
    ChannelPreference,
    DevicePlatform,
    Preferences,
    PushDevice,
    QuietHours,
    Recipient,
    WebhookEndpoint,
)


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _at(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _device_to_json(d: PushDevice) -> dict[str, Any]:
    return {
        "platform": d.platform.value,
        "token": d.token,
        "added_at": _iso(d.added_at),
        "invalidated_at": _iso(d.invalidated_at),
    }


def _device_from_json(d: Mapping[str, Any]) -> PushDevice:
    added = _at(d["added_at"])
    assert added is not None
    return PushDevice(DevicePlatform(d["platform"]), d["token"], added, _at(d["invalidated_at"]))


def _webhook_to_json(w: WebhookEndpoint | None) -> dict[str, Any] | None:
    if w is None:
        return None
    return {
        "url": w.url,
        "secret": w.secret,
        "disabled_at": _iso(w.disabled_at),
        "previous_secret": w.previous_secret,
        "previous_secret_expires_at": _iso(w.previous_secret_expires_at),
    }


def _webhook_from_json(w: Mapping[str, Any] | None) -> WebhookEndpoint | None:
    if w is None:
        return None
    # Rows written before endpoint secrets could rotate have no previous secret.
    return WebhookEndpoint(
        w["url"],
        w["secret"],
        _at(w["disabled_at"]),
        previous_secret=w.get("previous_secret", ""),
        previous_secret_expires_at=_at(w.get("previous_secret_expires_at")),
    )


def preferences_to_json(p: Preferences) -> dict[str, Any]:
    return {
        "channels": [
            {
                "category": c.category,
                "channel": c.channel.value if c.channel else None,
                "enabled": c.enabled,
            }
            for c in p.channels
        ],
        "marketing_opt_out": p.marketing_opt_out,
        "quiet_hours": (
            {"start": f"{p.quiet_hours.start:%H:%M}", "end": f"{p.quiet_hours.end:%H:%M}"}
            if p.quiet_hours
            else None
        ),
        "caps": [
            {"category": c.category, "per_hour": c.limits.per_hour, "per_day": c.limits.per_day}
            for c in p.caps
        ],
    }


def preferences_from_json(p: Mapping[str, Any]) -> Preferences:
    quiet = p.get("quiet_hours")
    return Preferences(
        channels=tuple(
            ChannelPreference(
                c["category"], Channel(c["channel"]) if c["channel"] else None, c["enabled"]
            )
            for c in p.get("channels", [])
        ),
        marketing_opt_out=bool(p.get("marketing_opt_out", False)),
        quiet_hours=(
            QuietHours(time.fromisoformat(quiet["start"]), time.fromisoformat(quiet["end"]))
            if quiet
            else None
        ),
        caps=tuple(
            CategoryCap(c["category"], Limits(c["per_hour"], c["per_day"]))
            for c in p.get("caps", [])
        ),
    )


def to_row(r: Recipient) -> dict[str, Any]:
    return {
        "tenant_id": r.tenant_id,
        "user_id": r.user_id,
        "email": r.email.value if r.email else None,
        "phone": r.phone.value if r.phone else None,
        "devices": [_device_to_json(d) for d in r.devices],
        "webhook": _webhook_to_json(r.webhook),
        "locale": r.locale,
        "time_zone": r.time_zone,
        "preferences": preferences_to_json(r.preferences),
        "created_at": r.created_at,
        "updated_at": r.updated_at,
    }


def from_row(row: RowMapping) -> Recipient:
    return Recipient(
        tenant_id=row["tenant_id"],
        user_id=row["user_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        email=Address("email", row["email"]) if row["email"] else None,
        phone=Address("phone", row["phone"]) if row["phone"] else None,
        devices=[_device_from_json(d) for d in row["devices"]],
        webhook=_webhook_from_json(row["webhook"]),
        locale=row["locale"],
        time_zone=row["time_zone"],
        preferences=preferences_from_json(row["preferences"]),
        version=row["version"],
    )
