"""What a recipient agreed to receive, and when."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from domain.errors import Violations
from domain.notification import Channel
from domain.policy.limits import Limits
from domain.recipient.quiet_hours import QuietHours

ANY_CATEGORY = "*"
MAX_PREFERENCE_ENTRIES = 500


@dataclass(frozen=True, slots=True)
class ChannelPreference:
    """Opt in (``enabled``) or out of ``category`` ("*": any) on ``channel`` (None: any)."""

    category: str
    channel: Channel | None
    enabled: bool

    @property
    def specificity(self) -> int:
        return (2 if self.category != ANY_CATEGORY else 0) + (1 if self.channel else 0)

    def matches(self, category: str, channel: Channel) -> bool:
        return self.category in (category, ANY_CATEGORY) and self.channel in (channel, None)


@dataclass(frozen=True, slots=True)
class CategoryCap:
    category: str
    limits: Limits


@dataclass(frozen=True, slots=True)
class Preferences:
    channels: tuple[ChannelPreference, ...] = ()
    marketing_opt_out: bool = False
    quiet_hours: QuietHours | None = None
    caps: tuple[CategoryCap, ...] = field(default=())

    @classmethod
    def parse(
        cls,
        channels: Sequence[ChannelPreference],
        marketing_opt_out: bool,
        quiet_hours: QuietHours | None,
        caps: Sequence[CategoryCap],
        field: str = "preferences",
    ) -> Preferences:
        """Check what QuietHours.parse and Limits.parse cannot see on their own: blank or
        repeated entries, and the number of them."""
        v = Violations()
        if len(channels) + len(caps) > MAX_PREFERENCE_ENTRIES:
            v.add(field, f"more than {MAX_PREFERENCE_ENTRIES} entries")
        seen: set[tuple[str, Channel | None]] = set()
        for i, pref in enumerate(channels):
            if not pref.category.strip():
                v.add(f"{field}.channels[{i}].category", 'required ("*" for every category)')
            key = (pref.category, pref.channel)
            if key in seen:
                v.add(f"{field}.channels[{i}]", "repeats an earlier entry for the same pair")
            seen.add(key)
        cap_categories: set[str] = set()
        for i, cap in enumerate(caps):
            if not cap.category.strip() or cap.category == ANY_CATEGORY:
                v.add(f"{field}.caps[{i}].category", "required: a category name")
            elif cap.category in cap_categories:
                v.add(f"{field}.caps[{i}].category", "repeats an earlier cap")
            cap_categories.add(cap.category)
        v.raise_if_any()
        return cls(tuple(channels), marketing_opt_out, quiet_hours, tuple(caps))

    def opt_out_reason(self, category: str, channel: Channel, marketing: bool) -> str:
        """Why the recipient does not want this ('' if they do). The most specific matching
        entry wins: category and channel, then category, then channel, then "*"."""
        if marketing and self.marketing_opt_out:
            return "recipient unsubscribed from marketing"
        matching = [p for p in self.channels if p.matches(category, channel)]
        if not matching:
            return ""
        best = max(matching, key=lambda p: p.specificity)
        if best.enabled:
            return ""
        what = "every category" if best.category == ANY_CATEGORY else f"category {best.category!r}"
        where = f"on {best.channel}" if best.channel else "on every channel"
        return f"recipient opted out of {what} {where}"

    def limits_for(self, category: str) -> Limits:
        for cap in self.caps:
            if cap.category == category:
                return cap.limits
        return Limits()

    def unsubscribed_from_marketing(self) -> Preferences:
        return Preferences(self.channels, True, self.quiet_hours, self.caps)
