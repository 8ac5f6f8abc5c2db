"""GetNotification and CancelNotification."""

from __future__ import annotations

import pytest

from application.ports.scheduler import QueueItem
from application.principal import Principal
from application.use_cases.manage_notification import CancelNotification, GetNotification
from domain.errors import IllegalTransition, NotFound, ValidationFailed
from domain.notification import Channel, Status
from tests.unit.application.fakes import World, delivered, make_notification

ALICE = Principal("tenant-a", "orders", "key-a")
BOB = Principal("tenant-b", "billing", "key-b")


def cancel(world: World) -> CancelNotification:
    return CancelNotification(world.uow, world.scheduler, world.clock)


@pytest.fixture
def queued(world: World) -> World:
    n = make_notification("n-1")
    world.db.insert(n)
    world.scheduler.waiting[n.id] = QueueItem(n.id, n.priority, n.due_at)
    return world


async def test_cancel_records_and_removes_from_the_scheduler(queued: World) -> None:
    n = await cancel(queued).execute(ALICE, "n-1")
    assert n.status is Status.CANCELLED
    assert queued.db.row("n-1").status is Status.CANCELLED
    assert queued.db.row("n-1").status_reason == "cancelled by caller"
    assert queued.scheduler.removed == ["n-1"]
    assert not (await queued.scheduler.contains_many(["n-1"]))[0]


async def test_cancel_twice_is_harmless(queued: World) -> None:
    await cancel(queued).execute(ALICE, "n-1")
    history = queued.db.row("n-1").history
    n = await cancel(queued).execute(ALICE, "n-1")
    assert n.status is Status.CANCELLED
    assert queued.db.row("n-1").history == history


async def test_cancel_of_another_tenants_notification_is_not_found(queued: World) -> None:
    with pytest.raises(NotFound):
        await cancel(queued).execute(BOB, "n-1")
    assert queued.db.row("n-1").status is Status.QUEUED
    assert queued.scheduler.calls == []


async def test_cancel_after_sending_is_illegal_and_changes_nothing(world: World) -> None:
    world.db.insert(delivered("n-2", channel=Channel.WEBHOOK))
    before = world.db.row("n-2")
    with pytest.raises(IllegalTransition):
        await cancel(world).execute(ALICE, "n-2")
    assert world.db.row("n-2") == before
    assert world.scheduler.calls == []


async def test_cancel_needs_an_id(world: World) -> None:
    with pytest.raises(ValidationFailed) as info:
        await cancel(world).execute(ALICE, " ")
    assert [v.field for v in info.value.violations] == ["id"]


async def test_get_returns_only_the_tenants_own(queued: World) -> None:
    get = GetNotification(queued.uow)
    assert (await get.execute(ALICE, "n-1")).id == "n-1"
    with pytest.raises(NotFound):
        await get.execute(BOB, "n-1")
    with pytest.raises(NotFound):
        await get.execute(ALICE, "missing")
