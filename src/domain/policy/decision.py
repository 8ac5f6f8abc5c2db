"""The policy step: may a notification go out, and when? Decided once, when it is accepted."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from domain.notification import Channel, Priority
from domain.notification.decision import Decision, Verdict
from domain.policy.category import CapAction, Category
from domain.recipient.preferences import Preferences

# Holding is repeated until both rules agree; each step moves forward, so a few suffice.
_MAX_STEPS = 32


def decide(
    *,
    category: Category,
    channel: Channel,
    priority: Priority,
    due: datetime,
    preferences: Preferences | None,
    time_zone: ZoneInfo,
    counted: Sequence[datetime] = (),
) -> Decision:
    """Apply, in order: opt-outs, frequency caps, quiet hours.

    ``due`` is when it would go out (now, or its scheduled time); ``counted`` the due times of
    the recipient's other notifications of the category that count against caps."""
    prefs = preferences or Preferences()
    opted_out = prefs.opt_out_reason(category.name, channel, category.is_marketing)
    if opted_out:
        return Decision(Verdict.SUPPRESS, opted_out)
    limits = category.limits.stricter(prefs.limits_for(category.name))
    if limits.active:
        breach = limits.breach(due, counted)
        if breach and category.cap_action is CapAction.SUPPRESS:
            return Decision(Verdict.SUPPRESS, f"{breach} for category {category.name!r}")
    quiet = prefs.quiet_hours
    bypass = priority is Priority.CRITICAL and not category.is_marketing
    at = due
    reasons: list[str] = []
    for _ in range(_MAX_STEPS):
        moved = False
        if limits.active:
            allowed = limits.next_allowed(at, counted)
            if allowed > at:
                reasons.append(f"held by frequency cap for category {category.name!r}")
                at, moved = allowed, True
        if quiet is not None and not bypass:
            ends = quiet.ends_after(at, time_zone)
            if ends is not None and ends > at:
                reasons.append(f"held for quiet hours ({quiet} {time_zone.key})")
                at, moved = ends, True
        if not moved:
            break
    else:
        # Caps and quiet hours kept pushing each other: never send early, say why.
        reasons.append("no time found within the cap and quiet hours")
    if at > due:
        why = "; ".join(dict.fromkeys(reasons))
        return Decision(Verdict.HOLD, f"{why} until {at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}", at)
    if quiet is not None and bypass and quiet.ends_after(due, time_zone) is not None:
        return Decision.send("quiet hours bypassed: CRITICAL transactional notification")
    return Decision.send()
