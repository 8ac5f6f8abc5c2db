"""ListDeadLetters and ReplayDeadLetters with fakes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from application.ports.repositories import DeadLetterQuery
from application.principal import Principal
from application.use_cases.dead_letters import ListDeadLetters, ReplayDeadLetters
from domain.errors import IllegalTransition, NotFound, ValidationFailed
from domain.notification import Channel, ErrorClass, Notification, RetryPolicy, Status
from tests.unit.application.fakes import T0, World, make_notification

ALICE = Principal("tenant-a", "orders", "key-a")
BOB = Principal("tenant-b", "billing", "key-b")


def failed(id: str, minutes: int, tenant: str = "tenant-a") -> Notification:
    n = make_notification(id, tenant_id=tenant)
    at = T0 + timedelta(minutes=minutes)
    n.begin_attempt(at)
    n.record_failure(
        at,
        provider="webhook",
        error_class=ErrorClass.PERMANENT,
        message="gone",
        policy=RetryPolicy(max_attempts=1),
        random=lambda: 0.5,
    )
    return n


@pytest.fixture
def dead(world: World) -> World:
    world.db.insert(
        failed("f1", 1), failed("f2", 2), failed("f3", 3), failed("theirs", 4, tenant="tenant-b")
    )
    world.db.insert(make_notification("queued"))
    world.clock.set(T0 + timedelta(hours=1))
    return world


async def test_pages_newest_first_until_the_last_page(dead: World) -> None:
    use_case = ListDeadLetters(dead.uow)
    page, token = await use_case.execute(ALICE, DeadLetterQuery(), 2, "")
    assert [n.id for n in page] == ["f3", "f2"]
    assert token
    page, token = await use_case.execute(ALICE, DeadLetterQuery(), 2, token)
    assert [n.id for n in page] == ["f1"]
    assert token == ""


async def test_a_token_is_only_valid_with_its_filters(dead: World) -> None:
    use_case = ListDeadLetters(dead.uow)
    _, token = await use_case.execute(ALICE, DeadLetterQuery(), 1, "")
    with pytest.raises(ValidationFailed) as info:
        await use_case.execute(ALICE, DeadLetterQuery(channel=Channel.IN_APP), 1, token)
    assert info.value.violations[0].field == "page_token"
    with pytest.raises(ValidationFailed, match="page_token"):
        await use_case.execute(ALICE, DeadLetterQuery(), 1, "not-a-token")


@pytest.mark.parametrize("size", [-1, 1001])
async def test_page_size_is_bounded(dead: World, size: int) -> None:
    with pytest.raises(ValidationFailed, match="page_size"):
        await ListDeadLetters(dead.uow).execute(ALICE, DeadLetterQuery(), size, "")


async def test_replay_requeues_with_id_and_history_kept(dead: World) -> None:
    before = dead.db.row("f1")
    [n] = await ReplayDeadLetters(dead.uow, dead.scheduler, dead.clock).execute(ALICE, ["f1"])
    assert n.id == "f1"
    row = dead.db.row("f1")
    assert row.status is Status.QUEUED
    assert row.history[: len(before.history)] == before.history
    assert row.attempts == before.attempts
    assert row.attempts_this_round == 0
    assert [i.notification_id for i in dead.scheduler.enqueued][-1] == "f1"


async def test_replay_is_all_or_nothing(dead: World) -> None:
    replay = ReplayDeadLetters(dead.uow, dead.scheduler, dead.clock)
    with pytest.raises(NotFound):
        await replay.execute(ALICE, ["f1", "theirs"])
    with pytest.raises(IllegalTransition):
        await replay.execute(ALICE, ["f1", "queued"])
    assert dead.db.row("f1").status is Status.FAILED
    assert dead.scheduler.enqueued == []
    with pytest.raises(ValidationFailed, match="ids"):
        await replay.execute(ALICE, [])


async def test_replay_refuses_a_blank_id_naming_it(dead: World) -> None:
    replay = ReplayDeadLetters(dead.uow, dead.scheduler, dead.clock)
    with pytest.raises(ValidationFailed) as info:
        await replay.execute(ALICE, ["f1", " "])
    assert info.value.violations[0].field == "ids[1]"
    assert dead.db.row("f1").status is Status.FAILED
