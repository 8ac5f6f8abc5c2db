"""What DeliverNotification and SendNotification tell their observer: every provider tried
(failovers included), where each handling left the notification, the delivery latency, and
new acceptances; and that a failing observer costs a data point, never a delivery."""

from __future__ import annotations

from datetime import timedelta

from application.failover import FailoverSender
from application.ports.delivery_observer import (
    AcceptanceOutcome,
    AttemptResult,
    DeliveryOutcome,
)
from application.ports.scheduler import Claim
from application.ports.sender import DeliveryFailed
from application.principal import Principal
from application.use_cases.commands import AddressInput, SendNotificationCommand
from application.use_cases.deliver_notification import DeliverNotification
from application.use_cases.policy_gate import PolicyGate
from application.use_cases.send_notification import SendNotification
from domain.notification import (
    Channel,
    Content,
    DeliveryResult,
    ErrorClass,
    Notification,
    Priority,
    RetryPolicy,
    Status,
)
from domain.recipient import ChannelPreference, Preferences, Profile, Recipient
from tests.unit.application.fakes import FakeSender, FixedClock, World, failure

ALICE = Principal("tenant-a", "orders", "key-a")
LEASE = timedelta(seconds=30)
POLICY = RetryPolicy(
    max_attempts=2, base_delay=timedelta(seconds=2), max_delay=timedelta(minutes=1)
)


class RecordingObserver:
    def __init__(self) -> None:
        self.attempts: list[tuple[Channel, str, AttemptResult]] = []
        self.handled: list[tuple[Channel, str, DeliveryOutcome, timedelta | None]] = []
        self.accepted: list[tuple[Channel, Priority, AcceptanceOutcome]] = []

    def attempt_finished(self, channel: Channel, provider: str, result: AttemptResult) -> None:
        self.attempts.append((channel, provider, result))

    def notification_handled(
        self,
        channel: Channel,
        provider: str,
        outcome: DeliveryOutcome,
        latency: timedelta | None = None,
    ) -> None:
        self.handled.append((channel, provider, outcome, latency))

    def notification_accepted(
        self, channel: Channel, priority: Priority, outcome: AcceptanceOutcome
    ) -> None:
        self.accepted.append((channel, priority, outcome))


class BrokenObserver(RecordingObserver):
    def attempt_finished(self, channel: Channel, provider: str, result: AttemptResult) -> None:
        raise RuntimeError("metrics backend bug")

    def notification_handled(
        self,
        channel: Channel,
        provider: str,
        outcome: DeliveryOutcome,
        latency: timedelta | None = None,
    ) -> None:
        raise RuntimeError("metrics backend bug")

    def notification_accepted(
        self, channel: Channel, priority: Priority, outcome: AcceptanceOutcome
    ) -> None:
        raise RuntimeError("metrics backend bug")


class ScriptedProvider:
    """A webhook-channel provider answering from a script, then accepting."""

    channel = Channel.WEBHOOK

    def __init__(self, name: str, *answers: DeliveryFailed) -> None:
        self.name = name
        self._answers = list(answers)

    async def send(self, notification: Notification) -> DeliveryResult:
        if self._answers:
            raise self._answers.pop(0)
        return DeliveryResult(self.name, f"{self.name}-1")


def down(provider: str) -> DeliveryFailed:
    return DeliveryFailed(ErrorClass.PROVIDER_DOWN, "503", provider=provider)


async def send(
    world: World,
    observer: RecordingObserver | None = None,
    channel: Channel = Channel.WEBHOOK,
    request_id: str = "req-1",
    **kw: object,
) -> Notification:
    args: dict[str, object] = {
        "request_id": request_id,
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
        world.uow, world.scheduler, world.preparer, world.clock, PolicyGate(), observer=observer
    ).execute(ALICE, SendNotificationCommand(**args))  # type: ignore[arg-type]
    return outcome.notification


async def claim(world: World) -> Claim:
    [c] = await world.scheduler.claim(1, world.clock.now(), LEASE)
    return c


def deliver(
    world: World, observer: RecordingObserver, *senders: FakeSender | FailoverSender
) -> DeliverNotification:
    return DeliverNotification(
        world.uow,
        world.scheduler,
        {s.channel: s for s in senders},
        {s.channel: POLICY for s in senders},
        world.clock,
        random=lambda: 0.5,
        observer=observer,
    )


def chain(clock: FixedClock, *providers: ScriptedProvider) -> FailoverSender:
    return FailoverSender(Channel.WEBHOOK, providers, clock=clock)


# -- the worker ----------------------------------------------------------------------------------


async def test_a_send_reports_the_attempt_and_the_latency_since_creation(world: World) -> None:
    seen = RecordingObserver()
    await send(world)
    world.clock.advance(timedelta(seconds=3))
    sender = FakeSender(Channel.WEBHOOK, DeliveryResult("webhook", "m-1"))

    assert await deliver(world, seen, sender).execute(await claim(world)) is Status.SENT

    assert seen.attempts == [(Channel.WEBHOOK, "webhook", AttemptResult.ACCEPTED)]
    assert seen.handled == [
        (Channel.WEBHOOK, "webhook", DeliveryOutcome.SENT, timedelta(seconds=3))
    ]


async def test_latency_of_a_scheduled_send_runs_from_its_scheduled_time(world: World) -> None:
    seen = RecordingObserver()
    start = world.clock.now()
    await send(world, scheduled_at=start + timedelta(minutes=10))
    world.clock.advance(timedelta(minutes=10, seconds=2))

    await deliver(world, seen, FakeSender(Channel.WEBHOOK)).execute(await claim(world))

    [(_, _, outcome, latency)] = seen.handled
    assert (outcome, latency) == (DeliveryOutcome.SENT, timedelta(seconds=2))


async def test_in_app_delivery_counts_as_sent(world: World) -> None:
    seen = RecordingObserver()
    await send(world, channel=Channel.IN_APP)
    sender = FakeSender(Channel.IN_APP, DeliveryResult("inbox", delivered=True))

    assert await deliver(world, seen, sender).execute(await claim(world)) is Status.DELIVERED

    assert seen.handled == [(Channel.IN_APP, "inbox", DeliveryOutcome.SENT, timedelta(0))]


async def test_a_transient_failure_is_a_retry_then_failed_once_attempts_are_used_up(
    world: World,
) -> None:
    seen = RecordingObserver()
    await send(world)
    sender = FakeSender(Channel.WEBHOOK, failure(ErrorClass.TRANSIENT, "503", provider="webhook"))
    use_case = deliver(world, seen, sender)

    assert await use_case.execute(await claim(world)) is Status.QUEUED
    world.clock.advance(timedelta(minutes=5))
    assert await use_case.execute(await claim(world)) is Status.FAILED

    assert seen.attempts == [(Channel.WEBHOOK, "webhook", AttemptResult.TRANSIENT)] * 2
    assert [(h[1], h[2], h[3]) for h in seen.handled] == [
        ("webhook", DeliveryOutcome.RETRY, None),
        ("webhook", DeliveryOutcome.FAILED, None),
    ]


async def test_every_provider_of_a_failover_chain_is_counted(world: World) -> None:
    seen = RecordingObserver()
    await send(world)
    sender = chain(
        world.clock,
        ScriptedProvider("primary", down("primary")),
        ScriptedProvider("secondary", down("secondary")),
        ScriptedProvider("tertiary"),
    )

    assert await deliver(world, seen, sender).execute(await claim(world)) is Status.SENT

    assert seen.attempts == [
        (Channel.WEBHOOK, "primary", AttemptResult.FAILED_OVER),
        (Channel.WEBHOOK, "secondary", AttemptResult.FAILED_OVER),
        (Channel.WEBHOOK, "tertiary", AttemptResult.ACCEPTED),
    ]
    assert [(h[1], h[2]) for h in seen.handled] == [("tertiary", DeliveryOutcome.SENT)]


async def test_a_chain_all_down_counts_the_last_provider_as_down_not_failed_over(
    world: World,
) -> None:
    seen = RecordingObserver()
    await send(world)
    sender = chain(
        world.clock,
        ScriptedProvider("primary", down("primary")),
        ScriptedProvider("secondary", down("secondary")),
    )

    assert await deliver(world, seen, sender).execute(await claim(world)) is Status.QUEUED

    assert seen.attempts == [
        (Channel.WEBHOOK, "primary", AttemptResult.FAILED_OVER),
        (Channel.WEBHOOK, "secondary", AttemptResult.PROVIDER_DOWN),
    ]
    assert [(h[1], h[2]) for h in seen.handled] == [("secondary", DeliveryOutcome.RETRY)]


async def test_a_permanent_failure_with_a_fallback_is_counted_on_the_channel_that_failed(
    world: World,
) -> None:
    world.db.recipients[("tenant-a", "user-1")] = _recipient_with_email(world)
    seen = RecordingObserver()
    n = await send(world, fallback_channels=(Channel.EMAIL,))
    sender = FakeSender(Channel.WEBHOOK, failure(ErrorClass.PERMANENT, "404", provider="webhook"))

    assert await deliver(world, seen, sender).execute(await claim(world)) is Status.QUEUED

    assert world.db.row(n.id).channel is Channel.EMAIL
    assert seen.handled == [(Channel.WEBHOOK, "webhook", DeliveryOutcome.FALLBACK, None)]
    assert seen.attempts == [(Channel.WEBHOOK, "webhook", AttemptResult.PERMANENT)]


async def test_expiry_before_the_send_is_counted_without_an_attempt(world: World) -> None:
    seen = RecordingObserver()
    start = world.clock.now()
    await send(world, expires_at=start + timedelta(seconds=5))
    c = await claim(world)
    world.clock.advance(timedelta(seconds=10))
    sender = FakeSender(Channel.WEBHOOK)

    assert await deliver(world, seen, sender).execute(c) is Status.EXPIRED

    assert sender.sent == []
    assert seen.attempts == []
    assert seen.handled == [(Channel.WEBHOOK, "", DeliveryOutcome.EXPIRED, None)]


async def test_a_superseded_outcome_is_not_counted_as_handled(world: World) -> None:
    seen = RecordingObserver()
    n = await send(world)
    c = await claim(world)
    # Another worker took over while this one was sending: its record wins.
    sender = FakeSender(Channel.WEBHOOK, on_send=lambda _: world.db.touch(n.id))

    assert await deliver(world, seen, sender).execute(c) is None

    assert seen.attempts == [(Channel.WEBHOOK, "fake", AttemptResult.ACCEPTED)]
    assert seen.handled == []


async def test_a_failing_observer_does_not_stop_a_delivery(world: World) -> None:
    n = await send(world, observer=BrokenObserver())
    sender = FakeSender(Channel.WEBHOOK)

    assert await deliver(world, BrokenObserver(), sender).execute(await claim(world)) is Status.SENT
    assert world.db.row(n.id).status is Status.SENT
    assert world.scheduler.acked, "the claim was acked after the observer failed"


# -- the API -------------------------------------------------------------------------------------


async def test_new_notifications_are_counted_once_replays_are_not(world: World) -> None:
    seen = RecordingObserver()
    await send(world, seen)
    await send(world, seen)  # the same request again: a replay
    await send(world, seen, channel=Channel.IN_APP, request_id="req-2", priority=Priority.LOW)

    assert seen.accepted == [
        (Channel.WEBHOOK, Priority.HIGH, AcceptanceOutcome.QUEUED),
        (Channel.IN_APP, Priority.LOW, AcceptanceOutcome.QUEUED),
    ]


async def test_a_suppressed_notification_is_counted_as_such(world: World) -> None:
    opted_out = Preferences(channels=(ChannelPreference("test", None, False),))
    world.db.recipients[("tenant-a", "user-1")] = _recipient_with_email(world, opted_out)
    seen = RecordingObserver()

    n = await send(world, seen)

    assert n.status is Status.SUPPRESSED
    assert seen.accepted == [(Channel.WEBHOOK, Priority.HIGH, AcceptanceOutcome.SUPPRESSED)]


def _recipient_with_email(world: World, preferences: Preferences | None = None) -> Recipient:
    from domain.notification import Address

    r = Recipient.register(
        "tenant-a",
        "user-1",
        Profile(email=Address("email", "ada@example.com")),
        preferences,
        world.clock.now(),
    )
    r.version = 1
    return r
