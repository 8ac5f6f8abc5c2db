"""DeliverNotification: one claimed notification through begin, send and finish."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from application.ports.scheduler import Claim, QueueItem
from application.ports.sender import Delivered
from application.principal import Principal
from application.use_cases.commands import AddressInput, SendNotificationCommand
from application.use_cases.deliver_notification import DeliverNotification
from application.use_cases.manage_notification import CancelNotification
from application.use_cases.send_notification import SendNotification
from domain.notification import (
    AttemptOutcome,
    Channel,
    Content,
    DeliveryResult,
    ErrorClass,
    Notification,
    Priority,
    RetryPolicy,
    Status,
)
from tests.unit.application.fakes import T0, FakeSender, World, failure

ALICE = Principal("tenant-a", "orders", "key-a")
LEASE = timedelta(seconds=30)
POLICY = RetryPolicy(
    max_attempts=3, base_delay=timedelta(seconds=2), max_delay=timedelta(minutes=1)
)


class WorkerCrashed(BaseException):
    """The worker process died mid-send (not an Exception: nothing in the use case catches it)."""


async def send(world: World, channel: Channel = Channel.WEBHOOK, **kw: object) -> Notification:
    args: dict[str, object] = {
        "request_id": "req-1",
        "user_id": "user-1",
        "channel": channel,
        "category": "test",
        "priority": Priority.HIGH,
        "content": Content("title", "body"),
        "address": AddressInput("webhook_url", "https://example.com/hook")
        if channel is Channel.WEBHOOK
        else None,
    }
    args.update(kw)
    outcome = await SendNotification(
        world.uow, world.scheduler, world.preparer, world.clock
    ).execute(
        ALICE,
        SendNotificationCommand(**args),  # type: ignore[arg-type]
    )
    return outcome.notification


async def claim(world: World) -> Claim:
    [c] = await world.scheduler.claim(1, world.clock.now(), LEASE)
    return c


def deliver(
    world: World, *senders: FakeSender, policy: RetryPolicy = POLICY
) -> DeliverNotification:
    return DeliverNotification(
        world.uow,
        world.scheduler,
        {s.channel: s for s in senders},
        {s.channel: policy for s in senders},
        world.clock,
        random=lambda: 0.5,
    )


async def test_success_sends_and_acks(world: World) -> None:
    n = await send(world)
    c = await claim(world)
    sender = FakeSender(Channel.WEBHOOK, DeliveryResult("webhook", "msg-7"))
    world.clock.advance(timedelta(seconds=1))

    assert await deliver(world, sender).execute(c) is Status.SENT

    assert [s.id for s in sender.sent] == [n.id]
    assert sender.sent[0].status is Status.SENDING, "the sender sees the attempt in progress"
    row = world.db.row(n.id)
    assert row.status is Status.SENT
    [attempt] = row.attempts
    assert (attempt.outcome, attempt.provider, attempt.provider_message_id) == (
        AttemptOutcome.ACCEPTED,
        "webhook",
        "msg-7",
    )
    assert world.scheduler.acked == [c]
    assert world.scheduler.retried == []
    assert world.scheduler.leased == {}
    assert row.version == 3  # insert, begin, finish


async def test_in_app_acceptance_is_delivery(world: World) -> None:
    n = await send(world, Channel.IN_APP)
    c = await claim(world)
    sender = FakeSender(Channel.IN_APP, DeliveryResult("inbox", delivered=True))
    assert await deliver(world, sender).execute(c) is Status.DELIVERED
    assert [h.status for h in world.db.row(n.id).history][-2:] == [Status.SENT, Status.DELIVERED]
    assert world.scheduler.acked == [c]


async def test_transient_failure_requeues_at_the_backoff_time(world: World) -> None:
    n = await send(world)
    c = await claim(world)
    now = world.clock.advance(timedelta(seconds=5))
    sender = FakeSender(Channel.WEBHOOK, failure(ErrorClass.TRANSIENT, "503"))

    assert await deliver(world, sender).execute(c) is Status.QUEUED

    due = now + timedelta(seconds=1)  # attempt 1: cap = base = 2s, jitter draw 0.5
    row = world.db.row(n.id)
    assert row.status is Status.QUEUED
    assert row.due_at == due
    assert row.attempts[0].outcome is AttemptOutcome.TRANSIENT_FAILURE
    assert world.scheduler.retried == [(c, due)]
    assert world.scheduler.acked == []
    assert world.scheduler.waiting[n.id] == QueueItem(n.id, Priority.HIGH, due)


async def test_retry_after_from_the_provider_is_honoured(world: World) -> None:
    n = await send(world)
    c = await claim(world)
    sender = FakeSender(
        Channel.WEBHOOK, failure(ErrorClass.TRANSIENT, "429", retry_after=timedelta(seconds=20))
    )
    await deliver(world, sender).execute(c)
    assert world.db.row(n.id).due_at == T0 + timedelta(seconds=20)
    assert world.scheduler.retried == [(c, T0 + timedelta(seconds=20))]


async def test_permanent_failure_fails_and_acks(world: World) -> None:
    n = await send(world)
    c = await claim(world)
    sender = FakeSender(Channel.WEBHOOK, failure(ErrorClass.PERMANENT, "410 Gone"))

    assert await deliver(world, sender).execute(c) is Status.FAILED

    row = world.db.row(n.id)
    assert row.status is Status.FAILED
    assert row.attempts[0].error_message == "410 Gone"
    assert world.scheduler.acked == [c]
    assert world.scheduler.retried == []


async def test_attempts_used_up_fail_and_ack(world: World) -> None:
    n = await send(world)
    sender = FakeSender(Channel.WEBHOOK, failure(ErrorClass.TRANSIENT, "timeout"))
    use_case = deliver(world, sender, policy=RetryPolicy(max_attempts=2))

    statuses = []
    for _ in range(2):
        c = await claim(world)
        statuses.append(await use_case.execute(c))
        world.clock.advance(timedelta(minutes=5))

    assert statuses == [Status.QUEUED, Status.FAILED]
    row = world.db.row(n.id)
    assert [a.number for a in row.attempts] == [1, 2]
    assert "gave up after 2 attempts" in row.status_reason
    assert len(sender.sent) == 2
    assert world.scheduler.acked == [c]
    assert len(world.scheduler.retried) == 1
    assert world.scheduler.waiting == {}
    assert world.scheduler.leased == {}


async def test_claim_of_a_cancelled_notification_is_acked_without_sending(world: World) -> None:
    n = await send(world)
    c = await claim(world)
    # Cancelled after the worker claimed it (remove leaves a held lease to its holder).
    await CancelNotification(world.uow, world.scheduler, world.clock).execute(ALICE, n.id)
    sender = FakeSender(Channel.WEBHOOK)

    assert await deliver(world, sender).execute(c) is None

    assert sender.sent == []
    assert world.db.row(n.id).status is Status.CANCELLED
    assert world.scheduler.acked == [c]
    assert world.scheduler.leased == {}


async def test_claim_of_an_unknown_notification_is_acked(world: World) -> None:
    c = Claim("never-committed", Priority.LOW, 1, T0 + LEASE)
    sender = FakeSender(Channel.WEBHOOK)
    assert await deliver(world, sender).execute(c) is None
    assert world.scheduler.acked == [c]
    assert sender.sent == []


async def test_early_claim_is_put_back_until_due(world: World) -> None:
    at = T0 + timedelta(hours=1)
    n = await send(world, scheduled_at=at)
    c = Claim(n.id, Priority.HIGH, 1, T0 + LEASE)  # e.g. a clock-skewed peer claimed it
    sender = FakeSender(Channel.WEBHOOK)

    assert await deliver(world, sender).execute(c) is None

    assert sender.sent == []
    assert world.scheduler.retried == [(c, at)]
    assert world.db.row(n.id).status is Status.QUEUED


async def test_expired_at_claim_time_expires_without_sending(world: World) -> None:
    n = await send(world, expires_at=T0 + timedelta(minutes=1))
    c = await claim(world)
    world.clock.advance(timedelta(minutes=2))
    sender = FakeSender(Channel.WEBHOOK)

    assert await deliver(world, sender).execute(c) is Status.EXPIRED

    assert sender.sent == []
    assert world.db.row(n.id).status is Status.EXPIRED
    assert world.scheduler.acked == [c]


async def test_concurrent_update_on_the_final_save_leaves_the_scheduler_alone(
    world: World,
) -> None:
    n = await send(world)
    c = await claim(world)
    # While we were sending, our lease lapsed and another worker rescued and wrote the row.
    sender = FakeSender(
        Channel.WEBHOOK, DeliveryResult("webhook"), on_send=lambda n: world.db.touch(n.id)
    )
    calls_before = list(world.scheduler.calls)

    assert await deliver(world, sender).execute(c) is None

    assert world.scheduler.calls == calls_before
    assert world.scheduler.leased == {n.id: c}
    row = world.db.row(n.id)
    assert row.status is Status.SENDING, "the other writer's record wins"
    assert row.attempts[0].outcome is AttemptOutcome.IN_PROGRESS


async def test_an_unexpected_sender_error_is_a_transient_failure(world: World) -> None:
    n = await send(world)
    c = await claim(world)
    sender = FakeSender(Channel.WEBHOOK, RuntimeError("adapter bug"))
    assert await deliver(world, sender).execute(c) is Status.QUEUED
    attempt = world.db.row(n.id).attempts[0]
    assert attempt.error_class is ErrorClass.TRANSIENT
    assert "RuntimeError: adapter bug" in attempt.error_message


async def test_a_channel_without_sender_fails_permanently(world: World) -> None:
    n = await send(world)
    c = await claim(world)
    assert await deliver(world, FakeSender(Channel.IN_APP)).execute(c) is Status.FAILED
    assert world.db.row(n.id).attempts[0].error_class is ErrorClass.PERMANENT


async def test_a_crashed_attempt_is_rescued_on_the_next_claim(world: World) -> None:
    n = await send(world)
    c = await claim(world)
    with pytest.raises(WorkerCrashed):
        await deliver(world, FakeSender(Channel.WEBHOOK, WorkerCrashed())).execute(c)
    assert world.db.row(n.id).status is Status.SENDING

    world.clock.advance(LEASE + timedelta(seconds=1))
    assert await world.scheduler.recover_expired_leases(world.clock.now(), 10) == 1
    c2 = await claim(world)
    assert c2.token > c.token
    assert await deliver(world, FakeSender(Channel.WEBHOOK)).execute(c2) is Status.SENT

    row = world.db.row(n.id)
    assert [a.outcome for a in row.attempts] == [AttemptOutcome.ABANDONED, AttemptOutcome.ACCEPTED]


async def test_a_notification_that_keeps_killing_workers_is_dead_lettered(world: World) -> None:
    n = await send(world)
    policy = RetryPolicy(max_attempts=2)
    for _ in range(2):
        c = await claim(world)
        with pytest.raises(WorkerCrashed):
            await deliver(
                world, FakeSender(Channel.WEBHOOK, WorkerCrashed()), policy=policy
            ).execute(c)
        world.clock.advance(LEASE + timedelta(seconds=1))
        await world.scheduler.recover_expired_leases(world.clock.now(), 10)

    sender = FakeSender(Channel.WEBHOOK)
    c = await claim(world)
    status = await deliver(world, sender, policy=policy).execute(c)

    assert sender.sent == [], "two attempts were used up; it must not be sent a third time"
    assert status is Status.FAILED
    assert world.db.row(n.id).status is Status.FAILED


async def test_an_outcome_is_recorded_once_postgres_is_back_not_sent_again(world: World) -> None:
    n = await send(world)
    c = await claim(world)
    sender = FakeSender(Channel.WEBHOOK, DeliveryResult("webhook", "msg-1"))
    real_send = sender.send

    async def send_then_lose_postgres(notification: Notification) -> DeliveryResult:
        result = await real_send(notification)
        world.db.unavailable_commits = 2  # the outcome's first two commits find Postgres down
        return result

    sender.send = send_then_lose_postgres  # type: ignore[method-assign]
    commits_before = world.db.commits
    use_case = DeliverNotification(
        world.uow,
        world.scheduler,
        {Channel.WEBHOOK: sender},
        {Channel.WEBHOOK: POLICY},
        world.clock,
        random=lambda: 0.5,
        lease=LEASE,
    )
    assert await use_case.execute(c) is Status.SENT
    assert len(sender.sent) == 1, "the provider answered once; it must not be asked again"
    assert world.db.row(n.id).status is Status.SENT
    assert world.db.commits == commits_before + 2  # begin, then the outcome once it got through
    assert world.scheduler.acked == [c]


async def test_attempts_since_a_replay_get_a_fresh_budget(world: World) -> None:
    n = await send(world)
    policy = RetryPolicy(max_attempts=1)
    c = await claim(world)
    sender = FakeSender(Channel.WEBHOOK, failure(ErrorClass.TRANSIENT))
    assert await deliver(world, sender, policy=policy).execute(c) is Status.FAILED
    row = world.db.row(n.id)
    row.replay(world.clock.advance(timedelta(minutes=1)))
    world.db.insert(row)
    await world.scheduler.enqueue([QueueItem(n.id, n.priority, row.due_at)], world.clock.now())
    c = await claim(world)
    ok = FakeSender(Channel.WEBHOOK, DeliveryResult("webhook"))
    assert await deliver(world, ok, policy=policy).execute(c) is Status.SENT
    assert [a.outcome for a in world.db.row(n.id).attempts] == [
        AttemptOutcome.TRANSIENT_FAILURE,
        AttemptOutcome.ACCEPTED,
    ]


async def test_the_lease_is_kept_alive_while_a_slow_send_runs(world: World) -> None:
    await send(world)
    c = await claim(world)

    async def slow(_: Notification) -> None:
        await asyncio.sleep(0.35)

    class SlowSender(FakeSender):
        async def send(self, notification: Notification) -> Delivered:
            await slow(notification)
            return await super().send(notification)

    use_case = DeliverNotification(
        world.uow,
        world.scheduler,
        {Channel.WEBHOOK: SlowSender(Channel.WEBHOOK)},
        {Channel.WEBHOOK: POLICY},
        world.clock,
        random=lambda: 0.5,
        lease=timedelta(seconds=0.3),
    )
    assert await use_case.execute(c) is Status.SENT
    # A chain of slow providers could outlast one lease: it is extended every third of it.
    assert world.scheduler.calls.count("extend") >= 2


async def test_an_answer_is_recorded_even_when_the_lease_keeper_ignores_its_cancel(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis call cut off mid-reply can swallow the keeper's cancellation (seen after
    connection resets under load): the provider's answer must still be recorded, not wait
    forever while the keeper keeps the lease alive so that nothing rescues it."""
    await send(world)
    c = await claim(world)
    in_extend = asyncio.Event()

    async def extend_that_swallows_cancel(*_: object) -> bool:
        in_extend.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(3600)  # the cancellation is lost here
        return True

    monkeypatch.setattr(world.scheduler, "extend", extend_that_swallows_cancel)
    monkeypatch.setattr("application.use_cases.deliver_notification.KEEPER_STOP_SECONDS", 0.05)

    class SenderWaitingForTheKeeper(FakeSender):
        async def send(self, notification: Notification) -> Delivered:
            await in_extend.wait()
            return await super().send(notification)

    use_case = DeliverNotification(
        world.uow,
        world.scheduler,
        {Channel.WEBHOOK: SenderWaitingForTheKeeper(Channel.WEBHOOK)},
        {Channel.WEBHOOK: POLICY},
        world.clock,
        random=lambda: 0.5,
        lease=timedelta(seconds=0.03),
    )
    status = await asyncio.wait_for(use_case.execute(c), timeout=5)
    assert status is Status.SENT
    assert world.db.row(c.notification_id).status is Status.SENT
    for task in asyncio.all_tasks():
        if task.get_coro().__qualname__.endswith("_keep_lease"):  # type: ignore[union-attr]
            task.cancel()


# -- batches: deliveries that reach a step together share one transaction ---------------------


async def claims_of(world: World, count: int) -> list[Claim]:
    for i in range(count):
        await send(world, request_id=f"req-{i}", user_id=f"user-{i}")
    return await world.scheduler.claim(count, world.clock.now(), LEASE)


async def test_claims_delivered_together_begin_and_record_in_one_transaction_each(
    world: World,
) -> None:
    claims = await claims_of(world, 5)
    sender = FakeSender(Channel.WEBHOOK, DeliveryResult("webhook", "msg"))
    use_case = deliver(world, sender)
    commits_before = world.db.commits

    statuses = await asyncio.gather(*(use_case.execute(c) for c in claims))

    assert statuses == [Status.SENT] * 5
    assert world.db.commits == commits_before + 2  # one begin, one record, for all five
    assert sorted(n.id for n in sender.sent) == sorted(c.notification_id for c in claims)
    for c in claims:
        row = world.db.row(c.notification_id)
        assert (row.status, row.version) == (Status.SENT, 3)
    assert sorted(c.notification_id for c in world.scheduler.acked) == sorted(
        c.notification_id for c in claims
    )


async def test_one_superseded_outcome_in_a_batch_is_rejected_alone(world: World) -> None:
    claims = await claims_of(world, 3)
    late = claims[1].notification_id
    # While it was sent, its lease lapsed and another worker rescued and wrote that one row.
    sender = FakeSender(
        Channel.WEBHOOK,
        DeliveryResult("webhook"),
        on_send=lambda n: world.db.touch(n.id) if n.id == late else None,
    )

    use_case = deliver(world, sender)
    statuses = await asyncio.gather(*(use_case.execute(c) for c in claims))

    assert statuses == [Status.SENT, None, Status.SENT]
    assert world.db.row(late).status is Status.SENDING, "the other writer's record wins"
    assert world.scheduler.leased == {late: claims[1]}, "its lease is the other holder's"
    for c in (claims[0], claims[2]):
        assert world.db.row(c.notification_id).status is Status.SENT
    assert world.scheduler.acked == [claims[0], claims[2]]


async def test_one_superseded_beginning_in_a_batch_is_left_to_its_holder(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = await claims_of(world, 3)
    taken = claims[0].notification_id
    load = type(world.uow().notifications).get_for_delivery_many

    async def load_then_lose_one(self: object, ids: list[str]) -> dict[str, Notification]:
        found = await load(self, ids)  # type: ignore[arg-type]
        world.db.touch(taken)  # another holder writes it between our load and our write
        return found

    monkeypatch.setattr(
        type(world.uow().notifications), "get_for_delivery_many", load_then_lose_one
    )
    sender = FakeSender(Channel.WEBHOOK, DeliveryResult("webhook"))

    use_case = deliver(world, sender)
    statuses = await asyncio.gather(*(use_case.execute(c) for c in claims))

    assert statuses == [None, Status.SENT, Status.SENT]
    assert taken not in {n.id for n in sender.sent}, "never sent by a holder that lost it"
    assert world.db.row(taken).status is Status.QUEUED


async def test_a_batch_mixes_sends_with_claims_that_are_not_ours_to_send(world: World) -> None:
    claims = await claims_of(world, 3)
    cancelled = claims[2].notification_id
    row = world.db.row(cancelled)
    row.cancel(world.clock.now())
    world.db.notifications[cancelled] = row
    sender = FakeSender(Channel.WEBHOOK, DeliveryResult("webhook"))
    use_case = deliver(world, sender)

    statuses = await asyncio.gather(
        *(use_case.execute(c) for c in claims),
        use_case.execute(Claim("no-such-id", Priority.HIGH, 99, claims[0].lease_deadline)),
    )

    assert statuses == [Status.SENT, Status.SENT, None, None]
    assert cancelled not in {n.id for n in sender.sent}
    assert world.db.row(cancelled).status is Status.CANCELLED
    assert {c.notification_id for c in world.scheduler.acked} >= {cancelled, "no-such-id"}


async def test_a_failing_write_fails_only_its_own_delivery(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outcome the database refuses (a bug, bad data) must not take the outcomes that
    happened to share its transaction down with it."""
    claims = await claims_of(world, 3)
    poisoned = claims[1].notification_id
    repo = type(world.uow().notifications)
    save_many = repo.save_many

    async def refusing(self: object, batch: list[Notification]) -> set[str]:
        if any(n.id == poisoned and n.status is Status.SENT for n in batch):
            raise ValueError("the database refused it")
        return await save_many(self, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(repo, "save_many", refusing)
    sender = FakeSender(Channel.WEBHOOK, DeliveryResult("webhook"))

    use_case = deliver(world, sender)
    commits_before = world.db.commits
    results = await asyncio.gather(*(use_case.execute(c) for c in claims), return_exceptions=True)

    assert results[0] is Status.SENT
    assert results[2] is Status.SENT
    assert isinstance(results[1], ValueError)
    assert world.db.row(poisoned).status is Status.SENDING  # its lease lapses; retried then
    # The shared transaction failed, then each outcome was written alone.
    assert world.db.commits == commits_before + 1 + 2
    for c in (claims[0], claims[2]):
        assert world.db.row(c.notification_id).status is Status.SENT


async def test_in_app_deliveries_recorded_together_each_log_their_own_unread_count(
    world: World,
) -> None:
    """Each inbox entry carries the unread count just after its own notification arrived,
    as if it had been recorded alone: a resuming stream shows 1, 2, 3, not 3, 3, 3."""
    for i in range(3):
        await send(world, Channel.IN_APP, request_id=f"req-{i}")
    claims = await world.scheduler.claim(3, world.clock.now(), LEASE)
    sender = FakeSender(Channel.IN_APP, DeliveryResult("inbox", delivered=True))
    use_case = deliver(world, sender)
    commits_before = world.db.commits

    statuses = await asyncio.gather(*(use_case.execute(c) for c in claims))

    assert statuses == [Status.DELIVERED] * 3
    assert world.db.commits == commits_before + 2
    uow = world.uow()
    async with uow:
        events = await uow.inbox.after("tenant-a", "user-1", 0, 10)
    assert [e.unread_count for e in events] == [1, 2, 3]
    assert sorted(e.notification_id for e in events) == sorted(c.notification_id for c in claims)
