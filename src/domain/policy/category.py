"""Categories: the kind of a notification (transactional or marketing) and its rules."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from domain.errors import ValidationFailed, Violations
from domain.policy.limits import Limits

MAX_DEDUP_WINDOW = timedelta(days=7)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class CategoryKind(enum.StrEnum):
    TRANSACTIONAL = "TRANSACTIONAL"
    MARKETING = "MARKETING"


class CapAction(enum.StrEnum):
    """What happens to a notification over a frequency cap."""

    SUPPRESS = "SUPPRESS"
    HOLD = "HOLD"


@dataclass(frozen=True, slots=True)
class Category:
    name: str
    kind: CategoryKind = CategoryKind.TRANSACTIONAL
    limits: Limits = field(default_factory=Limits)
    cap_action: CapAction = CapAction.SUPPRESS
    # None: the service's default window; timedelta(0): no duplicate detection.
    dedup_window: timedelta | None = None
    updated_at: datetime | None = None

    @classmethod
    def undefined(cls, name: str) -> Category:
        """A category nobody defined: transactional, no caps, the default duplicate window."""
        return cls(name)

    @classmethod
    def define(
        cls,
        name: str,
        kind: CategoryKind | None,
        *,
        per_hour: int,
        per_day: int,
        cap_action: CapAction,
        dedup_window_seconds: int | None,
        now: datetime,
        field: str = "category",
    ) -> Category:
        v = Violations()
        if not _NAME.fullmatch(name):
            v.add(
                f"{field}.name",
                "1-128 characters: letters, digits, '_', '.', ':', '-' "
                "(starting with a letter or digit)",
            )
        if kind is None:
            v.add(f"{field}.kind", "required: TRANSACTIONAL or MARKETING")
        limits = Limits()
        try:
            limits = Limits.parse(per_hour, per_day, field)
        except ValidationFailed as error:
            v.extend(error)
        window = None
        if dedup_window_seconds is not None:
            if not 0 <= dedup_window_seconds <= MAX_DEDUP_WINDOW.total_seconds():
                v.add(
                    f"{field}.dedup_window_seconds",
                    f"must be between 0 (off) and {int(MAX_DEDUP_WINDOW.total_seconds())}",
                )
            else:
                window = timedelta(seconds=dedup_window_seconds)
        v.raise_if_any()
        assert kind is not None
        return cls(name, kind, limits, cap_action, window, now)

    @property
    def is_marketing(self) -> bool:
        return self.kind is CategoryKind.MARKETING

    def dedup_window_or(self, default: timedelta) -> timedelta:
        return default if self.dedup_window is None else self.dedup_window
