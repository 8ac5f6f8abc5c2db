"""MarkAsRead (all or nothing) and GetUnreadCount."""

from __future__ import annotations

import pytest

from application.principal import Principal
from application.use_cases.inbox import GetUnreadCount, MarkAsRead
from domain.errors import NotFound, PreconditionFailed, ValidationFailed
from domain.notification import Channel, Status
from tests.unit.application.fakes import World, delivered, make_notification

ALICE = Principal("tenant-a", "orders", "key-a")
BOB = Principal("tenant-b", "billing", "key-b")


def mark(world: World) -> MarkAsRead:
    return MarkAsRead(world.uow, world.clock)


def statuses(world: World) -> dict[str, Status]:
    return {k: v.status for k, v in world.db.notifications.items()}


@pytest.fixture
def inbox(world: World) -> World:
    read = delivered("n-read")
    read.mark_read(read.updated_at)
    world.db.insert(
        delivered("n-1"),
        delivered("n-2"),
        read,
        make_notification("n-queued"),
        delivered("n-hook", channel=Channel.WEBHOOK),
        delivered("n-other-user", user_id="user-2"),
        delivered("n-bob", tenant_id="tenant-b"),
    )
    return world


async def test_marks_and_counts_only_newly_read(inbox: World) -> None:
    assert await mark(inbox).execute(ALICE, ["n-1", "n-2", "n-read"]) == 2
    after = statuses(inbox)
    assert (after["n-1"], after["n-2"], after["n-read"]) == (Status.READ,) * 3
    assert inbox.db.commits == 1
    assert inbox.db.notifications["n-1"].changed_at(Status.READ) == inbox.clock.now()
    # Held from the load to the commit, so that a concurrent writer cannot slip in between.
    assert inbox.db.notification_locks == ["n-1", "n-2", "n-read"]


async def test_marking_again_counts_nothing(inbox: World) -> None:
    await mark(inbox).execute(ALICE, ["n-1"])
    assert await mark(inbox).execute(ALICE, ["n-1"]) == 0


async def test_duplicate_ids_count_once(inbox: World) -> None:
    assert await mark(inbox).execute(ALICE, ["n-1", "n-1", "n-1"]) == 1


async def test_an_unknown_id_changes_nothing(inbox: World) -> None:
    before = statuses(inbox)
    with pytest.raises(NotFound) as info:
        await mark(inbox).execute(ALICE, ["n-1", "nope", "n-2"])
    assert info.value.key == "nope"
    assert statuses(inbox) == before
    assert inbox.db.commits == 0


async def test_another_tenants_id_is_not_found(inbox: World) -> None:
    with pytest.raises(NotFound) as info:
        await mark(inbox).execute(ALICE, ["n-1", "n-bob"])
    assert info.value.key == "n-bob"
    assert inbox.db.notifications["n-bob"].status is Status.DELIVERED
    assert inbox.db.notifications["n-1"].status is Status.DELIVERED
    # ...and the owner can mark it.
    assert await mark(inbox).execute(BOB, ["n-bob"]) == 1


async def test_a_non_in_app_id_fails_the_whole_call(inbox: World) -> None:
    with pytest.raises(PreconditionFailed) as info:
        await mark(inbox).execute(ALICE, ["n-1", "n-hook"])
    assert info.value.reason == "NOT_IN_APP"
    assert inbox.db.notifications["n-1"].status is Status.DELIVERED
    assert inbox.db.commits == 0
    assert inbox.db.rollbacks == 1


@pytest.mark.parametrize(
    ("ids", "field"),
    [([], "ids"), (["n-1", " "], "ids[1]"), ([f"n-{i}" for i in range(1001)], "ids")],
)
async def test_bad_id_lists_are_refused(inbox: World, ids: list[str], field: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        await mark(inbox).execute(ALICE, ids)
    assert [v.field for v in info.value.violations] == [field]
    assert inbox.uow.opened == 0


async def test_unread_count_is_the_users_delivered_in_app_notifications(inbox: World) -> None:
    count = GetUnreadCount(inbox.uow)
    assert await count.execute(ALICE, "user-1") == 2
    assert await count.execute(ALICE, "user-2") == 1
    assert await count.execute(BOB, "user-1") == 1
    assert await count.execute(ALICE, "nobody") == 0
    await mark(inbox).execute(ALICE, ["n-1"])
    assert await count.execute(ALICE, "user-1") == 1


async def test_unread_count_needs_a_user(inbox: World) -> None:
    with pytest.raises(ValidationFailed) as info:
        await GetUnreadCount(inbox.uow).execute(ALICE, "  ")
    assert [v.field for v in info.value.violations] == ["user_id"]
