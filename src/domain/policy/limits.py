"""Frequency caps: how many notifications of a category a recipient may get per hour and day."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.errors import Violations

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
MAX_CAP = 100_000


def _lower(a: int, b: int) -> int:
    """The stricter of two caps, where 0 means "no cap"."""
    if a and b:
        return min(a, b)
    return a or b


@dataclass(frozen=True, slots=True)
class Limits:
    """At most ``per_hour`` in any hour and ``per_day`` in any 24 hours; 0 is no limit."""

    per_hour: int = 0
    per_day: int = 0

    @classmethod
    def parse(cls, per_hour: int, per_day: int, field: str) -> Limits:
        v = Violations()
        for name, value in (("per_hour", per_hour), ("per_day", per_day)):
            if not 0 <= value <= MAX_CAP:
                v.add(f"{field}.{name}", f"must be between 0 (no cap) and {MAX_CAP}")
        if per_hour and per_day and per_hour > per_day:
            v.add(f"{field}.per_hour", f"{per_hour} per hour is more than {per_day} per day")
        v.raise_if_any()
        return cls(per_hour, per_day)

    @property
    def active(self) -> bool:
        return bool(self.per_hour or self.per_day)

    def stricter(self, other: Limits) -> Limits:
        return Limits(_lower(self.per_hour, other.per_hour), _lower(self.per_day, other.per_day))

    def _windows(self) -> list[tuple[timedelta, int, str]]:
        out = []
        if self.per_hour:
            out.append((HOUR, self.per_hour, "hour"))
        if self.per_day:
            out.append((DAY, self.per_day, "day"))
        return out

    def breach(self, at: datetime, counted: Sequence[datetime]) -> str:
        """Why one more notification due at ``at`` would break a cap ('' if it would not).

        ``counted`` are the due times of the recipient's other notifications of the category
        that count (sent or still to be sent). A window around ``at`` reaches both ways, so a
        notification held for later also counts against one sent now."""
        for window, cap, name in self._windows():
            inside = sum(1 for t in counted if at - window < t < at + window)
            if inside >= cap:
                return f"frequency cap reached: at most {cap} per {name}"
        return ""

    def next_allowed(self, at: datetime, counted: Sequence[datetime]) -> datetime:
        """The earliest time at or after ``at`` at which one more breaks no cap. A window only
        clears when a counted notification leaves it, so the answer is ``at`` or one of those
        moments."""
        candidates = sorted(
            {at}
            | {t + window for t in counted for window, _, _ in self._windows() if t + window > at}
        )
        for candidate in candidates:
            if not self.breach(candidate, counted):
                return candidate
        # Unreachable: after the last counted time plus a day every window is empty.
        return max(counted) + DAY
