"""The fakes behave like the real adapters where the use cases depend on it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from application.errors import ConcurrentUpdate
from application.ports.repositories import UnitOfWorkFactory
from application.ports.scheduler import QueueItem, Scheduler
from application.ports.sender import DeliveryFailed, Sender
from application.ports.templates import TemplateRenderer
from domain.errors import NotFound, ValidationFailed
from domain.notification import Channel, DeliveryResult, ErrorClass, Priority, Status, TemplateRef
from tests.unit.application.fakes import (
    T0,
    FakeRenderer,
    FakeScheduler,
    FakeSender,
    FakeUnitOfWorkFactory,
    FixedClock,
    SequentialIds,
    failure,
    make_notification,
)


def test_fakes_satisfy_the_ports() -> None:
    # Checked by mypy; at run time, make sure the objects at least exist as the ports expect.
    factory: UnitOfWorkFactory = FakeUnitOfWorkFactory()
    scheduler: Scheduler = FakeScheduler()
    sender: Sender = FakeSender(Channel.EMAIL)
    renderer: TemplateRenderer = FakeRenderer()
    assert callable(factory)
    assert all(callable(getattr(scheduler, m)) for m in ("enqueue", "claim", "ack", "retry_at"))
    assert sender.channel is Channel.EMAIL
    assert callable(renderer.render)


async def test_writes_are_rolled_back_unless_committed() -> None:
    factory = FakeUnitOfWorkFactory()
    async with factory() as uow:
        assert await uow.notifications.add(make_notification("n-1"))
        assert await uow.notifications.get_for_delivery("n-1") is not None  # own writes visible
    assert factory.db.notifications == {}
    assert factory.db.rollbacks == 1

    async with factory() as uow:
        await uow.notifications.add(make_notification("n-1"))
        await uow.commit()
    assert list(factory.db.notifications) == ["n-1"]


async def test_an_exception_rolls_back() -> None:
    factory = FakeUnitOfWorkFactory()

    async def fail_midway() -> None:
        async with factory() as uow:
            await uow.notifications.add(make_notification("n-1"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await fail_midway()
    assert factory.db.notifications == {}


async def test_loads_are_copies() -> None:
    factory = FakeUnitOfWorkFactory()
    factory.db.insert(make_notification("n-1"))
    async with factory() as uow:
        n = await uow.notifications.get("tenant-a", "n-1")
        n.cancel(T0)
    assert factory.db.notifications["n-1"].status is Status.QUEUED


async def test_request_id_is_unique_per_tenant() -> None:
    factory = FakeUnitOfWorkFactory()
    async with factory() as uow:
        assert await uow.notifications.add(make_notification("n-1", request_id="r"))
        assert not await uow.notifications.add(make_notification("n-2", request_id="r"))
        assert await uow.notifications.add(
            make_notification("n-3", request_id="r", tenant_id="tenant-b")
        )
        assert await uow.notifications.add_many(
            [make_notification("n-4", request_id="r"), make_notification("n-5")]
        ) == {"n-5"}


async def test_save_is_a_compare_and_set_on_version() -> None:
    factory = FakeUnitOfWorkFactory()
    factory.db.insert(make_notification("n-1"))
    async with factory() as uow:
        n = await uow.notifications.get("tenant-a", "n-1")
        factory.db.touch("n-1")
        with pytest.raises(ConcurrentUpdate):
            await uow.notifications.save(n)
    async with factory() as uow:
        n = await uow.notifications.get("tenant-a", "n-1")
        await uow.notifications.save(n)
        assert n.version == 3
        n.version = 2
        with pytest.raises(ConcurrentUpdate):
            await uow.notifications.save(n)


async def test_get_hides_other_tenants_rows() -> None:
    factory = FakeUnitOfWorkFactory()
    factory.db.insert(make_notification("n-1"))
    async with factory() as uow:
        with pytest.raises(NotFound):
            await uow.notifications.get("tenant-b", "n-1")
        assert await uow.notifications.get_many("tenant-b", ["n-1"]) == []


async def test_scheduler_claims_by_priority_then_due_time_and_fences() -> None:
    s = FakeScheduler()
    await s.enqueue(
        [
            QueueItem("low", Priority.LOW, T0),
            QueueItem("high-late", Priority.HIGH, T0 + timedelta(seconds=1)),
            QueueItem("high", Priority.HIGH, T0),
            QueueItem("future", Priority.CRITICAL, T0 + timedelta(hours=1)),
        ],
        T0,
    )
    claims = await s.claim(10, T0 + timedelta(seconds=1), timedelta(seconds=30))
    assert [c.notification_id for c in claims] == ["high", "high-late", "low"]
    assert [c.token for c in claims] == [1, 2, 3]
    assert await s.ack(claims[0])
    assert not await s.ack(claims[0]), "a lease is released once"


async def test_sender_plays_outcomes_in_order() -> None:
    sender = FakeSender(Channel.EMAIL, failure(ErrorClass.TRANSIENT), DeliveryResult("smtp", "m-1"))
    n = make_notification("n-1", channel=Channel.EMAIL)
    with pytest.raises(DeliveryFailed):
        await sender.send(n)
    assert (await sender.send(n)).result.provider_message_id == "m-1"
    assert (await sender.send(n)).result.provider_message_id == "m-1"
    assert len(sender.sent) == 3


async def test_renderer_names_missing_variables() -> None:
    r = FakeRenderer({("t", "x"): ("{a}", "{b}")})
    with pytest.raises(ValidationFailed) as info:
        await r.render("t", TemplateRef("x", {"a": 1}), Channel.EMAIL)
    assert [v.field for v in info.value.violations] == ["template.variables.b"]
    rendered = await r.render("t", TemplateRef("x", {"a": 1, "b": 2}), Channel.EMAIL)
    assert (rendered.content.title, rendered.content.body) == ("1", "2")


def test_clock_and_ids() -> None:
    clock = FixedClock()
    assert clock.advance(timedelta(seconds=3)) == T0 + timedelta(seconds=3)
    assert clock.now() == T0 + timedelta(seconds=3)
    ids = SequentialIds("n-")
    assert [ids.new_id(), ids.new_id()] == ["n-000001", "n-000002"]
