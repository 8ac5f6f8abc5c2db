"""The policy rules on their own: quiet hours (time zones, midnight, DST), frequency caps at
their boundaries, and the order in which decide() applies them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from domain.errors import ValidationFailed
from domain.notification import Channel, Decision, Priority, Verdict
from domain.policy import CapAction, Category, CategoryKind, Limits
from domain.policy.decision import decide
from domain.recipient import CategoryCap, ChannelPreference, Preferences, QuietHours

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
T = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)


def at(local: str, tz: ZoneInfo) -> datetime:
    return datetime.fromisoformat(local).replace(tzinfo=tz).astimezone(UTC)


# -- quiet hours ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "ends"),
    [
        ("2026-06-10T21:59", None),
        ("2026-06-10T22:00", "2026-06-11T07:00"),
        ("2026-06-10T23:30", "2026-06-11T07:00"),
        ("2026-06-11T00:00", "2026-06-11T07:00"),
        ("2026-06-11T06:59", "2026-06-11T07:00"),
        ("2026-06-11T07:00", None),
    ],
)
def test_quiet_hours_across_midnight(local: str, ends: str | None) -> None:
    quiet = QuietHours.parse("22:00", "07:00")
    got = quiet.ends_after(at(local, BERLIN), BERLIN)
    assert got == (at(ends, BERLIN) if ends else None)


def test_quiet_hours_within_one_day() -> None:
    quiet = QuietHours.parse("13:00", "14:30")
    assert quiet.ends_after(at("2026-06-10T12:59", BERLIN), BERLIN) is None
    assert quiet.ends_after(at("2026-06-10T13:00", BERLIN), BERLIN) == at(
        "2026-06-10T14:30", BERLIN
    )
    assert quiet.ends_after(at("2026-06-10T14:30", BERLIN), BERLIN) is None


def test_quiet_hours_are_read_in_the_recipients_own_time_zone() -> None:
    quiet = QuietHours.parse("22:00", "07:00")
    instant = datetime(2026, 6, 11, 3, 0, tzinfo=UTC)  # 05:00 in Berlin, 23:00 in New York
    assert quiet.ends_after(instant, BERLIN) == at("2026-06-11T07:00", BERLIN)
    assert quiet.ends_after(instant, NEW_YORK) == at("2026-06-11T07:00", NEW_YORK)
    assert quiet.ends_after(instant, ZoneInfo("Asia/Tokyo")) is None  # 12:00 in Tokyo


def test_a_window_ending_in_the_spring_forward_gap_ends_when_the_clock_jumps() -> None:
    # Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 never happens.
    quiet = QuietHours.parse("22:00", "02:30")
    ends = quiet.ends_after(at("2026-03-28T23:00", BERLIN), BERLIN)
    assert ends == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert ends.astimezone(BERLIN).hour == 3


def test_a_window_ending_in_the_repeated_hour_ends_at_its_first_occurrence() -> None:
    # Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    quiet = QuietHours.parse("22:00", "02:30")
    ends = quiet.ends_after(at("2026-10-24T23:00", BERLIN), BERLIN)
    assert ends == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST


def test_quiet_hours_on_the_night_the_clocks_go_forward_are_one_hour_shorter() -> None:
    quiet = QuietHours.parse("22:00", "07:00")
    start = at("2026-03-28T22:00", BERLIN)
    ends = quiet.ends_after(start, BERLIN)
    assert ends is not None
    assert ends - start == timedelta(hours=8)


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        ("25:00", "07:00", "quiet_hours.start"),
        ("22:00", "7:00", "quiet_hours.end"),
        ("22:60", "07:00", "quiet_hours.start"),
        ("22:00", "22:00", "quiet_hours.end"),
        ("", "07:00", "quiet_hours.start"),
    ],
)
def test_bad_quiet_hours_name_the_field(start: str, end: str, field: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        QuietHours.parse(start, end)
    assert field in [v.field for v in info.value.violations]


# -- frequency caps -------------------------------------------------------------------------


def test_a_cap_allows_exactly_its_number_within_the_window() -> None:
    limits = Limits(per_hour=3)
    sent = [T, T + timedelta(minutes=10), T + timedelta(minutes=20)]
    assert limits.breach(T + timedelta(minutes=30), sent[:2]) == ""
    assert "3 per hour" in limits.breach(T + timedelta(minutes=30), sent)


def test_the_window_is_open_at_its_far_end() -> None:
    limits = Limits(per_hour=1)
    assert limits.breach(T + timedelta(minutes=59, seconds=59), [T])
    assert limits.breach(T + timedelta(hours=1), [T]) == ""


def test_the_daily_cap_counts_24_hours() -> None:
    limits = Limits(per_day=2)
    sent = [T, T + timedelta(hours=20)]
    assert limits.breach(T + timedelta(hours=23), sent)
    assert limits.breach(T + timedelta(hours=24), sent) == ""


def test_a_notification_held_for_later_counts_against_one_sent_now() -> None:
    limits = Limits(per_hour=1)
    assert limits.breach(T, [T + timedelta(minutes=30)])


def test_next_allowed_is_when_the_oldest_leaves_the_window() -> None:
    limits = Limits(per_hour=2)
    sent = [T, T + timedelta(minutes=10)]
    assert limits.next_allowed(T + timedelta(minutes=20), sent) == T + timedelta(hours=1)
    assert limits.next_allowed(T + timedelta(hours=2), sent) == T + timedelta(hours=2)


def test_next_allowed_honours_both_windows() -> None:
    limits = Limits(per_hour=5, per_day=2)
    sent = [T, T + timedelta(minutes=1)]
    assert limits.next_allowed(T + timedelta(minutes=2), sent) == T + timedelta(days=1)


def test_the_stricter_cap_wins_and_zero_means_none() -> None:
    assert Limits(3, 0).stricter(Limits(5, 10)) == Limits(3, 10)
    assert Limits(0, 0).stricter(Limits(0, 4)) == Limits(0, 4)


@pytest.mark.parametrize(("hour", "day"), [(-1, 0), (0, -5), (10, 5), (200_000, 0)])
def test_bad_caps_are_refused(hour: int, day: int) -> None:
    with pytest.raises(ValidationFailed):
        Limits.parse(hour, day, "caps[0]")


# -- decide ---------------------------------------------------------------------------------

TX = Category("order_shipped")
PROMO = Category("promo", CategoryKind.MARKETING)
QUIET = Preferences(quiet_hours=QuietHours.parse("22:00", "07:00"))
NIGHT = at("2026-06-10T23:00", BERLIN)
MORNING = at("2026-06-11T07:00", BERLIN)


def run(
    category: Category = TX,
    *,
    preferences: Preferences | None = None,
    due: datetime = T,
    priority: Priority = Priority.MEDIUM,
    channel: Channel = Channel.EMAIL,
    counted: list[datetime] | None = None,
) -> Decision:
    return decide(
        category=category,
        channel=channel,
        priority=priority,
        due=due,
        preferences=preferences,
        time_zone=BERLIN,
        counted=counted or [],
    )


def test_no_preferences_and_no_caps_send_now() -> None:
    d = run()
    assert (d.verdict, d.reason, d.until) == (Verdict.SEND, "", None)


def test_an_opt_out_suppresses_with_the_reason() -> None:
    prefs = Preferences(channels=(ChannelPreference("order_shipped", Channel.EMAIL, False),))
    d = run(preferences=prefs)
    assert d.verdict is Verdict.SUPPRESS
    assert "order_shipped" in d.reason
    assert "EMAIL" in d.reason
    assert run(preferences=prefs, channel=Channel.SMS).verdict is Verdict.SEND


def test_the_most_specific_preference_wins() -> None:
    prefs = Preferences(
        channels=(
            ChannelPreference("*", None, False),
            ChannelPreference("order_shipped", None, True),
            ChannelPreference("order_shipped", Channel.SMS, False),
        )
    )
    assert run(preferences=prefs).verdict is Verdict.SEND
    assert run(preferences=prefs, channel=Channel.SMS).verdict is Verdict.SUPPRESS
    assert run(Category("other"), preferences=prefs).verdict is Verdict.SUPPRESS


def test_marketing_needs_the_recipient_not_to_have_opted_out_of_marketing() -> None:
    prefs = Preferences(marketing_opt_out=True)
    d = run(PROMO, preferences=prefs)
    assert (d.verdict, d.reason) == (Verdict.SUPPRESS, "recipient unsubscribed from marketing")
    assert run(TX, preferences=prefs).verdict is Verdict.SEND


def test_quiet_hours_hold_until_the_window_ends() -> None:
    d = run(preferences=QUIET, due=NIGHT)
    assert d.verdict is Verdict.HOLD
    assert d.until == MORNING
    assert "quiet hours" in d.reason


def test_critical_transactional_bypasses_quiet_hours_and_says_so() -> None:
    d = run(preferences=QUIET, due=NIGHT, priority=Priority.CRITICAL)
    assert d.verdict is Verdict.SEND
    assert "bypassed" in d.reason


def test_marketing_is_never_sent_in_quiet_hours_even_when_critical() -> None:
    d = run(PROMO, preferences=QUIET, due=NIGHT, priority=Priority.CRITICAL)
    assert (d.verdict, d.until) == (Verdict.HOLD, MORNING)


def test_a_cap_suppresses_by_default() -> None:
    capped = Category("digest", limits=Limits(per_hour=1))
    d = run(capped, counted=[T - timedelta(minutes=5)])
    assert d.verdict is Verdict.SUPPRESS
    assert "frequency cap" in d.reason
    assert "digest" in d.reason


def test_a_recipients_own_cap_applies_too() -> None:
    prefs = Preferences(caps=(CategoryCap("order_shipped", Limits(per_day=1)),))
    assert run(preferences=prefs, counted=[T - timedelta(hours=3)]).verdict is Verdict.SUPPRESS


def test_a_holding_cap_holds_until_the_window_allows() -> None:
    capped = Category("digest", limits=Limits(per_hour=1), cap_action=CapAction.HOLD)
    d = run(capped, counted=[T - timedelta(minutes=15)])
    assert (d.verdict, d.until) == (Verdict.HOLD, T + timedelta(minutes=45))


def test_a_hold_that_lands_in_quiet_hours_waits_for_the_morning() -> None:
    capped = Category("digest", limits=Limits(per_hour=1), cap_action=CapAction.HOLD)
    due = at("2026-06-10T21:30", BERLIN)
    d = run(capped, preferences=QUIET, due=due, counted=[due - timedelta(minutes=10)])
    assert (d.verdict, d.until) == (Verdict.HOLD, MORNING)
    assert "frequency cap" in d.reason
    assert "quiet hours" in d.reason


def test_in_the_repeated_hour_the_window_ends_at_the_second_occurrence_when_past_the_first() -> (
    None
):
    # Zurich, 2024-10-27: 02:15 CET (01:15Z) comes after 02:30 CEST (00:30Z) has passed.
    quiet = QuietHours.parse("22:00", "02:30")
    zurich = ZoneInfo("Europe/Zurich")
    second_pass = datetime(2024, 10, 27, 1, 15, tzinfo=UTC)
    assert quiet.ends_after(second_pass, zurich) == datetime(2024, 10, 27, 1, 30, tzinfo=UTC)
    d = decide(
        category=PROMO,
        channel=Channel.EMAIL,
        priority=Priority.CRITICAL,
        due=second_pass,
        preferences=Preferences(quiet_hours=quiet),
        time_zone=zurich,
    )
    assert (d.verdict, d.until) == (Verdict.HOLD, datetime(2024, 10, 27, 1, 30, tzinfo=UTC))
