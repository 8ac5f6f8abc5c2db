"""Quiet hours: a daily window in the recipient's own time zone."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from domain.errors import Violations

_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


def _parse_hhmm(value: str, field: str, v: Violations) -> time | None:
    m = _HHMM.fullmatch(value)
    if m is None:
        v.add(field, f"{value!r} is not a time of day as HH:MM (00:00 to 23:59)")
        return None
    return time(int(m[1]), int(m[2]))


def _instant(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The first instant the local clock in ``tz`` shows ``at`` (or later) on ``day``.

    A time the clock skips (spring forward) becomes the end of the gap; a time it shows twice
    (fall back) is its first occurrence."""
    wall = datetime.combine(day, at, tzinfo=tz)
    first = wall.astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall.replace(tzinfo=None):
        return first
    # In a gap: fold=0 read it with the offset before the change (a later instant) and fold=1
    # with the one after (an earlier instant); the change itself lies between them.
    second = wall.replace(fold=1).astimezone(UTC)
    low, high = min(first, second), max(first, second)
    while high - low > timedelta(minutes=1):
        mid = low + (high - low) / 2
        if mid.astimezone(tz).replace(tzinfo=None) >= wall.replace(tzinfo=None):
            high = mid
        else:
            low = mid
    return high.replace(second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class QuietHours:
    """From ``start`` to ``end`` local time every day; ``end`` before ``start`` crosses midnight."""

    start: time
    end: time

    @classmethod
    def parse(cls, start: str, end: str, field: str = "quiet_hours") -> QuietHours:
        v = Violations()
        s = _parse_hhmm(start, f"{field}.start", v)
        e = _parse_hhmm(end, f"{field}.end", v)
        if s is not None and e is not None and s == e:
            v.add(f"{field}.end", "equals start: the window would be empty")
        v.raise_if_any()
        assert s is not None
        assert e is not None
        return cls(s, e)

    @property
    def crosses_midnight(self) -> bool:
        return self.end < self.start

    def ends_after(self, at: datetime, tz: ZoneInfo) -> datetime | None:
        """If ``at`` falls inside the window (in ``tz``), the instant the window ends; else None."""
        local = at.astimezone(tz)
        clock = local.time().replace(tzinfo=None)
        today = local.date()
        if not self.crosses_midnight:
            if self.start <= clock < self.end:
                return self._end_after(today, at, tz)
            return None
        if clock >= self.start:
            return self._end_after(today + timedelta(days=1), at, tz)
        if clock < self.end:
            return self._end_after(today, at, tz)
        return None

    def _end_after(self, day: date, at: datetime, tz: ZoneInfo) -> datetime:
        """The window's end on ``day``, but after ``at``: in the hour a fall-back repeats, the
        clock shows the end time twice, and ``at`` may lie between the two."""
        end = _instant(day, self.end, tz)
        if end > at:
            return end
        second = datetime.combine(day, self.end, tzinfo=tz).replace(fold=1).astimezone(UTC)
        return second if second > at else _instant(day + timedelta(days=1), self.end, tz)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"
