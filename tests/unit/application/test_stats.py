"""GetStats with fakes: the window's rules, and the rates derived from the counts."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from application.ports.notification_queries import DeliveryStats
from application.principal import Principal
from application.use_cases.stats import GetStats
from domain.errors import ValidationFailed
from domain.notification import Channel, DeliveryResult, EngagementAction, Notification, Status
from tests.unit.application.fakes import T0, World, make_notification

ALICE = Principal("tenant-a", "orders", "key-a")
NOW = T0 + timedelta(days=1)


def sent(nid: str, minutes: int, latency_ms: int, *, provider: str = "webhook") -> Notification:
    created = T0 + timedelta(minutes=minutes)
    n = make_notification(nid, channel=Channel.WEBHOOK, now=created)
    n.begin_attempt(created)
    n.record_success(created + timedelta(milliseconds=latency_ms), DeliveryResult(provider, "m"))
    return n


@pytest.fixture
def stats(world: World) -> GetStats:
    world.clock.set(NOW)
    return GetStats(world.uow, world.clock)


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        (None, None, "start_time"),
        (None, NOW, "start_time"),
        (NOW + timedelta(seconds=1), None, "start_time"),
        (NOW, NOW, "end_time"),
        (NOW, NOW - timedelta(seconds=1), "end_time"),
        (T0, T0 + timedelta(days=92, seconds=1), "end_time"),
        (NOW - timedelta(days=92, seconds=1), None, "start_time"),
    ],
)
async def test_a_bad_window_names_its_field(
    stats: GetStats, start: datetime | None, end: datetime | None, field: str
) -> None:
    with pytest.raises(ValidationFailed) as info:
        await stats.execute(ALICE, start, end)
    assert [v.field for v in info.value.violations] == [field]


async def test_a_window_of_exactly_92_days_is_allowed(stats: GetStats) -> None:
    report = await stats.execute(ALICE, T0, T0 + timedelta(days=92))
    assert report.groups == []
    assert report.total.total_count == 0


async def test_the_window_ends_now_by_default_and_excludes_its_end(
    world: World, stats: GetStats
) -> None:
    world.db.insert(
        sent("before", -1, 100),
        sent("first", 0, 100),
        sent("last", 24 * 60 - 1, 100),
        make_notification("at-the-end", now=NOW),
    )
    report = await stats.execute(ALICE, T0, None)
    assert report.total.total_count == 2
    bounded = await stats.execute(ALICE, T0 - timedelta(minutes=1), T0 + timedelta(minutes=1))
    assert bounded.total.total_count == 2
    assert (await stats.execute(ALICE, T0, NOW + timedelta(hours=1))).total.total_count == 3


async def test_groups_by_channel_provider_and_category_with_a_total(
    world: World, stats: GetStats
) -> None:
    opened = sent("opened", 3, 300)
    opened.engage(EngagementAction.OPENED, opened.updated_at, NOW)
    world.db.insert(
        sent("a", 1, 100),
        sent("b", 2, 200, provider="backup"),
        opened,
        make_notification("queued", now=T0),
        make_notification("other-tenant", tenant_id="tenant-b", now=T0),
    )
    report = await stats.execute(ALICE, T0 - timedelta(hours=1), NOW)
    keys = [(g.channel, g.provider, g.category) for g in report.groups]
    assert keys == [
        (Channel.IN_APP, "", "test"),
        (Channel.WEBHOOK, "backup", "test"),
        (Channel.WEBHOOK, "webhook", "test"),
    ]
    webhook = report.groups[2]
    assert dict(webhook.status_counts) == {Status.SENT: 1, Status.READ: 1}
    assert (webhook.latency_p50_ms, webhook.opened_count, webhook.open_rate) == (200.0, 1, 0.5)
    total = report.total
    assert (total.channel, total.provider, total.category) == (None, "", "")
    assert total.total_count == 4
    assert total.success_rate == 1.0  # the queued one is not decided yet
    assert total.latency_p50_ms == 200.0
    only_in_app = await stats.execute(ALICE, T0 - timedelta(hours=1), NOW, Channel.IN_APP)
    assert only_in_app.total.total_count == 1


def test_rates_come_from_the_counts() -> None:
    s = DeliveryStats(
        Channel.EMAIL,
        "smtp",
        "news",
        status_counts={
            Status.SENT: 3,
            Status.DELIVERED: 2,
            Status.READ: 3,
            Status.FAILED: 1,
            Status.EXPIRED: 1,
            Status.QUEUED: 5,
            Status.SUPPRESSED: 2,
            Status.CANCELLED: 1,
        },
        opened_count=4,
        clicked_count=2,
    )
    assert s.total_count == 18
    assert s.accepted_count == 8
    assert s.decided_count == 10
    assert s.success_rate == 0.8
    assert s.open_rate == 0.5
    assert s.click_rate == 0.25


def test_rates_with_nothing_to_divide_by_are_zero() -> None:
    s = DeliveryStats(Channel.SMS, "", "otp", status_counts={Status.QUEUED: 2})
    assert (s.success_rate, s.open_rate, s.click_rate) == (0.0, 0.0, 0.0)
