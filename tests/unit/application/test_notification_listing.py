"""ListNotifications with fakes: validation, page tokens bound to filters, keyset paging."""

from __future__ import annotations

from datetime import timedelta

import pytest

from application.ports.notification_queries import NotificationQuery
from application.principal import Principal
from application.use_cases.notification_listing import ListNotifications
from domain.errors import ValidationFailed
from domain.notification import Channel, Notification, Priority, Status
from tests.unit.application.fakes import T0, World, delivered, make_notification

ALICE = Principal("tenant-a", "orders", "key-a")
BOB = Principal("tenant-b", "billing", "key-b")


def at(minutes: int) -> Notification:
    return make_notification(f"n-{minutes:03d}", now=T0 + timedelta(minutes=minutes))


def listing(world: World) -> ListNotifications:
    return ListNotifications(world.uow)


async def ids(world: World, query: NotificationQuery, size: int = 0, token: str = "") -> list[str]:
    page, _ = await listing(world).execute(ALICE, query, size, token)
    return [n.id for n in page]


async def all_pages(world: World, query: NotificationQuery, size: int) -> list[list[str]]:
    pages: list[list[str]] = []
    token = ""
    while True:
        page, token = await listing(world).execute(ALICE, query, size, token)
        pages.append([n.id for n in page])
        if not token:
            return pages


@pytest.fixture
def five(world: World) -> World:
    world.db.insert(*(at(m) for m in range(5)))
    return world


async def test_pages_newest_first_and_the_last_page_has_no_token(five: World) -> None:
    assert await all_pages(five, NotificationQuery(), 2) == [
        ["n-004", "n-003"],
        ["n-002", "n-001"],
        ["n-000"],
    ]


async def test_an_exactly_full_last_page_ends_without_a_token(five: World) -> None:
    page, token = await listing(five).execute(ALICE, NotificationQuery(), 5, "")
    assert len(page) == 5
    assert token == ""


async def test_page_size_zero_means_one_hundred(world: World) -> None:
    world.db.insert(*(at(m) for m in range(101)))
    page, token = await listing(world).execute(ALICE, NotificationQuery(), 0, "")
    assert len(page) == 100
    assert token


@pytest.mark.parametrize("size", [-1, 1001])
async def test_page_size_out_of_range_is_refused(five: World, size: int) -> None:
    with pytest.raises(ValidationFailed) as info:
        await listing(five).execute(ALICE, NotificationQuery(), size, "")
    assert info.value.violations[0].field == "page_size"


async def test_page_size_1000_is_allowed(five: World) -> None:
    page, token = await listing(five).execute(ALICE, NotificationQuery(), 1000, "")
    assert (len(page), token) == (5, "")


async def test_equal_creation_times_page_by_id_without_loss_or_repeat(world: World) -> None:
    same = [make_notification(f"same-{i}", now=T0) for i in range(5)]
    world.db.insert(*same)
    pages = await all_pages(world, NotificationQuery(), 2)
    assert pages == [["same-4", "same-3"], ["same-2", "same-1"], ["same-0"]]


async def test_a_token_is_only_valid_with_the_filters_it_was_issued_for(five: World) -> None:
    query = NotificationQuery(user_id="user-1")
    _, token = await listing(five).execute(ALICE, query, 1, "")
    with pytest.raises(ValidationFailed) as info:
        await listing(five).execute(ALICE, NotificationQuery(user_id="user-2"), 1, token)
    assert info.value.violations[0].field == "page_token"
    assert "other filters" in info.value.violations[0].description


async def test_the_order_of_statuses_does_not_change_the_filters(world: World) -> None:
    world.db.insert(at(1), at(2), delivered("d-1", now=T0 + timedelta(minutes=3)))
    first = NotificationQuery(statuses=frozenset({Status.QUEUED, Status.DELIVERED}))
    page, token = await listing(world).execute(ALICE, first, 1, "")
    assert [n.id for n in page] == ["d-1"]
    same = NotificationQuery(statuses=frozenset([Status.DELIVERED, Status.QUEUED]))
    assert await ids(world, same, 1, token) == ["n-002"]


@pytest.mark.parametrize("token", ["garbage", "eyJwIjogMX0=", "e30=", "%%%"])
async def test_a_token_this_api_did_not_issue_is_refused(five: World, token: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        await listing(five).execute(ALICE, NotificationQuery(), 1, token)
    assert info.value.violations[0].field == "page_token"


async def test_the_end_of_the_range_must_follow_its_start(five: World) -> None:
    query = NotificationQuery(created_from=T0, created_before=T0)
    with pytest.raises(ValidationFailed) as info:
        await listing(five).execute(ALICE, query, 0, "")
    assert info.value.violations[0].field == "end_time"


async def test_the_range_is_start_inclusive_end_exclusive(five: World) -> None:
    query = NotificationQuery(
        created_from=T0 + timedelta(minutes=1), created_before=T0 + timedelta(minutes=3)
    )
    assert await ids(five, query) == ["n-002", "n-001"]


async def test_only_the_callers_tenant_is_listed(five: World) -> None:
    five.db.insert(make_notification("bobs", tenant_id="tenant-b", now=T0 + timedelta(hours=1)))
    assert "bobs" not in await ids(five, NotificationQuery())
    page, _ = await listing(five).execute(BOB, NotificationQuery(), 0, "")
    assert [n.id for n in page] == ["bobs"]


async def test_every_filter_narrows_and_they_combine(world: World) -> None:
    def build(nid: str, minutes: int, **changes: object) -> Notification:
        n = make_notification(nid, now=T0 + timedelta(minutes=minutes))
        for name, value in changes.items():
            setattr(n, name, value)
        return n

    world.db.insert(
        build("plain", 1),
        build("other-user", 2, user_id="user-2"),
        build("email", 3, channel=Channel.EMAIL),
        build("billing", 4, category="billing"),
        build("urgent", 5, priority=Priority.CRITICAL),
        build("from-crm", 6, caller="crm"),
        build("crm-billing", 7, caller="crm", category="billing"),
    )
    world.db.insert(delivered("sent", now=T0 + timedelta(minutes=8)))
    assert await ids(world, NotificationQuery(user_id="user-2")) == ["other-user"]
    assert await ids(world, NotificationQuery(channel=Channel.EMAIL)) == ["email"]
    assert await ids(world, NotificationQuery(category="billing")) == ["crm-billing", "billing"]
    assert await ids(world, NotificationQuery(priority=Priority.CRITICAL)) == ["urgent"]
    assert await ids(world, NotificationQuery(caller_service="crm")) == ["crm-billing", "from-crm"]
    assert await ids(world, NotificationQuery(statuses=frozenset({Status.DELIVERED}))) == ["sent"]
    both = NotificationQuery(caller_service="crm", category="billing")
    assert await ids(world, both) == ["crm-billing"]
    assert await ids(world, NotificationQuery(category="billing", user_id="user-2")) == []
