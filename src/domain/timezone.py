"""IANA time zones, checked once where they enter."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from domain.errors import ValidationFailed

UTC_NAME = "UTC"


def zone(name: str, field: str = "time_zone") -> ZoneInfo:
    """The zone named ``name`` ('' is UTC); ValidationFailed naming ``field`` if unknown."""
    if not name:
        return ZoneInfo(UTC_NAME)
    try:
        if name.startswith("/") or ".." in name or len(name) > 64:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValidationFailed.single(
            field, f"{name!r} is not an IANA time zone (e.g. Europe/Zurich)"
        ) from error
