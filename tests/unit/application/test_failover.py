"""FailoverSender: order, breakers, rate limits, pinning and what it reports."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from application.errors import Unavailable
from application.failover import FailoverSender
from application.ports.sender import BreakerState, Delivered, DeliveryFailed, FailedOver
from domain.notification import (
    AddressRejection,
    Channel,
    DeliveryResult,
    ErrorClass,
    Notification,
    RetryPolicy,
)
from tests.unit.application.fakes import T0, FixedClock, make_notification

STEP = timedelta(milliseconds=20)


# -- fakes -----------------------------------------------------------------------------------


Outcome = DeliveryResult | Exception


class FakeProvider:
    """Answers from a script (then accepts), each call taking STEP on the clock."""

    def __init__(self, name: str, clock: FixedClock, *outcomes: Outcome) -> None:
        self.name = name
        self.channel = Channel.EMAIL
        self.calls: list[str] = []
        self._clock = clock
        self._outcomes = list(outcomes)

    async def send(self, notification: Notification) -> DeliveryResult:
        self.calls.append(notification.id)
        self._clock.advance(STEP)
        outcome = (
            self._outcomes.pop(0)
            if self._outcomes
            else DeliveryResult(self.name, f"{self.name}-msg-{len(self.calls)}")
        )
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def down(provider: str, message: str = "503 Service Unavailable") -> DeliveryFailed:
    return DeliveryFailed(ErrorClass.PROVIDER_DOWN, message, provider=provider)


@dataclass
class _Breaker:
    state: BreakerState = BreakerState.CLOSED
    failures: list[datetime] = field(default_factory=list)
    opened_at: datetime | None = None
    probe_until: datetime | None = None


class FakeBreaker:
    """The CircuitBreaker contract in memory: N failures in a window open it, one probe after
    the cool-down, success closes, failure reopens."""

    def __init__(
        self,
        threshold: int = 3,
        window: timedelta = timedelta(seconds=30),
        cooldown: timedelta = timedelta(seconds=30),
    ) -> None:
        self.threshold = threshold
        self.window = window
        self.cooldown = cooldown
        self.breakers: dict[str, _Breaker] = {}
        self.log: list[tuple[str, str]] = []

    def _of(self, provider: str) -> _Breaker:
        return self.breakers.setdefault(provider, _Breaker())

    def force_open(self, provider: str, now: datetime) -> None:
        self.breakers[provider] = _Breaker(BreakerState.OPEN, opened_at=now)

    async def allow(self, provider: str, now: datetime) -> bool:
        b = self._of(provider)
        if b.state is BreakerState.CLOSED:
            return True
        if b.state is BreakerState.OPEN:
            assert b.opened_at is not None
            if now < b.opened_at + self.cooldown:
                return False
        elif b.probe_until is not None and now < b.probe_until:
            return False
        b.state, b.probe_until = BreakerState.HALF_OPEN, now + self.cooldown
        return True

    async def record_success(self, provider: str, now: datetime) -> None:
        self.log.append(("success", provider))
        if self._of(provider).state is BreakerState.HALF_OPEN:
            self.breakers[provider] = _Breaker()

    async def record_failure(self, provider: str, now: datetime) -> None:
        self.log.append(("failure", provider))
        b = self._of(provider)
        if b.state is BreakerState.HALF_OPEN:
            self.breakers[provider] = _Breaker(BreakerState.OPEN, opened_at=now)
        elif b.state is BreakerState.CLOSED:
            b.failures = [t for t in b.failures if t > now - self.window] + [now]
            if len(b.failures) >= self.threshold:
                self.breakers[provider] = _Breaker(BreakerState.OPEN, opened_at=now)

    async def state(self, provider: str, now: datetime) -> BreakerState:
        return self._of(provider).state


class FakeLimiter:
    """One slot per 1/rate per provider (burst of one); unlisted providers are free."""

    def __init__(self, rates: dict[str, float]) -> None:
        self.intervals = {name: timedelta(seconds=1 / rate) for name, rate in rates.items()}
        self.next_free: dict[str, datetime] = {}
        self.granted: list[tuple[str, datetime]] = []

    def exhaust(self, provider: str, until: datetime) -> None:
        self.next_free[provider] = until

    async def acquire(self, provider: str, now: datetime) -> timedelta:
        interval = self.intervals.get(provider)
        if interval is None:
            return timedelta(0)
        free_at = self.next_free.get(provider, now)
        if now < free_at:
            return free_at - now
        self.next_free[provider] = max(free_at, now) + interval
        self.granted.append((provider, now))
        return timedelta(0)


class UnreachableStore:
    """A breaker and a limiter whose Redis is down."""

    async def allow(self, provider: str, now: datetime) -> bool:
        raise Unavailable("redis", "connection refused")

    async def record_success(self, provider: str, now: datetime) -> None:
        raise Unavailable("redis", "connection refused")

    async def record_failure(self, provider: str, now: datetime) -> None:
        raise Unavailable("redis", "connection refused")

    async def state(self, provider: str, now: datetime) -> BreakerState:
        raise Unavailable("redis", "connection refused")

    async def acquire(self, provider: str, now: datetime) -> timedelta:
        raise Unavailable("redis", "connection refused")


@dataclass
class Rig:
    clock: FixedClock
    primary: FakeProvider
    backup: FakeProvider
    breaker: FakeBreaker
    limiter: FakeLimiter
    sleeps: list[float]
    sender: FailoverSender


def rig(
    primary: Sequence[Outcome] = (),
    backup: Sequence[Outcome] = (),
    *,
    rates: dict[str, float] | None = None,
    max_rate_wait: timedelta = timedelta(seconds=1),
    breaker_cooldown: timedelta | None = None,
    limiter: FakeLimiter | None = None,
) -> Rig:
    clock = FixedClock(T0)
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(timedelta(seconds=seconds))

    p = FakeProvider("smtp", clock, *primary)
    b = FakeProvider("smtp-2", clock, *backup)
    breaker = FakeBreaker()
    limiter = limiter or FakeLimiter(rates or {})
    sender = FailoverSender(
        Channel.EMAIL,
        [p, b],
        clock=clock,
        breaker=breaker,
        limiter=limiter,
        max_rate_wait=max_rate_wait,
        breaker_cooldown=breaker_cooldown,
        sleep=sleep,
    )
    return Rig(clock, p, b, breaker, limiter, sleeps, sender)


def email(id: str = "n-1") -> Notification:
    n = make_notification(id, channel=Channel.EMAIL)
    n.begin_attempt(T0)
    return n


def pinned_to(provider: str) -> Notification:
    """A notification whose earlier attempt on ``provider`` went out unanswered."""
    n = email()
    n.record_failure(
        T0,
        provider=provider,
        error_class=ErrorClass.MAYBE_ACCEPTED,
        message="read timeout",
        policy=RetryPolicy(),
        random=lambda: 0.5,
    )
    n.begin_attempt(T0 + timedelta(minutes=1))
    assert n.pinned_provider == provider
    return n


async def failure_of(sender: FailoverSender, n: Notification) -> DeliveryFailed:
    with pytest.raises(DeliveryFailed) as caught:
        await sender.send(n)
    return caught.value


# -- the chain -------------------------------------------------------------------------------


async def test_primary_accepts() -> None:
    r = rig()

    delivered = await r.sender.send(email())

    assert delivered == Delivered(DeliveryResult("smtp", "smtp-msg-1"))
    assert r.backup.calls == []
    assert r.breaker.log == [("success", "smtp")]


async def test_primary_down_fails_over_to_backup_and_reports_it() -> None:
    r = rig(primary=[down("smtp", "connection refused")])

    delivered = await r.sender.send(email())

    assert delivered.result == DeliveryResult("smtp-2", "smtp-2-msg-1")
    assert delivered.failovers == (FailedOver("smtp", "connection refused", T0, T0 + STEP),)
    assert r.primary.calls == ["n-1"]
    assert r.backup.calls == ["n-1"]
    assert r.breaker.log == [("failure", "smtp"), ("success", "smtp-2")]


async def test_maybe_accepted_is_raised_without_touching_the_backup() -> None:
    timeout = DeliveryFailed(ErrorClass.MAYBE_ACCEPTED, "read timeout", provider="smtp")
    r = rig(primary=[timeout])

    failure = await failure_of(r.sender, email())

    assert failure is timeout
    assert failure.failovers == ()
    assert r.backup.calls == []
    assert r.breaker.log == [("failure", "smtp")]


async def test_maybe_accepted_after_a_failover_carries_the_failover() -> None:
    r = rig(
        primary=[down("smtp")],
        backup=[DeliveryFailed(ErrorClass.MAYBE_ACCEPTED, "dropped", provider="smtp-2")],
    )

    failure = await failure_of(r.sender, email())

    assert failure.error_class is ErrorClass.MAYBE_ACCEPTED
    assert failure.provider == "smtp-2"
    assert [f.provider for f in failure.failovers] == ["smtp"]


@pytest.mark.parametrize(
    "failure",
    [
        DeliveryFailed(
            ErrorClass.PERMANENT,
            "550 no such user",
            provider="smtp",
            rejection=AddressRejection.GONE,
        ),
        DeliveryFailed(
            ErrorClass.TRANSIENT, "429", provider="smtp", retry_after=timedelta(seconds=7)
        ),
    ],
    ids=["permanent", "transient"],
)
async def test_answers_about_the_notification_are_not_failed_over(
    failure: DeliveryFailed,
) -> None:
    r = rig(primary=[failure])

    raised = await failure_of(r.sender, email())

    assert raised is failure
    assert raised.retry_after == failure.retry_after
    assert raised.rejection == failure.rejection
    assert r.backup.calls == []
    # The provider answered: it is up, so the breaker hears a success, not a failure.
    assert r.breaker.log == [("success", "smtp")]


async def test_open_breaker_skips_the_primary_without_calling_it() -> None:
    r = rig()
    r.breaker.force_open("smtp", T0)

    delivered = await r.sender.send(email())

    assert delivered.result.provider == "smtp-2"
    # Skipped, not tried: nothing to record as an attempt.
    assert delivered.failovers == ()
    assert r.primary.calls == []


async def test_all_down_reports_the_failovers_and_the_final_failure_once() -> None:
    r = rig(
        primary=[down("smtp", "connection refused")],
        backup=[
            DeliveryFailed(
                ErrorClass.PROVIDER_DOWN,
                "503",
                provider="smtp-2",
                retry_after=timedelta(seconds=20),
            )
        ],
    )

    failure = await failure_of(r.sender, email())

    assert failure.error_class is ErrorClass.PROVIDER_DOWN
    assert failure.provider == "smtp-2"
    assert failure.failovers == (FailedOver("smtp", "connection refused", T0, T0 + STEP),)
    assert failure.message == "all providers unavailable: smtp: connection refused; smtp-2: 503"
    assert failure.retry_after == timedelta(seconds=20)


async def test_all_open_names_the_first_provider_and_waits_for_the_cooldown() -> None:
    r = rig(breaker_cooldown=timedelta(seconds=30))
    r.breaker.force_open("smtp", T0)
    r.breaker.force_open("smtp-2", T0)

    failure = await failure_of(r.sender, email())

    assert failure.error_class is ErrorClass.PROVIDER_DOWN
    assert failure.provider == "smtp"
    assert failure.failovers == ()
    assert failure.retry_after == timedelta(seconds=30)
    assert "smtp: circuit open; smtp-2: circuit open" in failure.message
    assert r.primary.calls == r.backup.calls == []


async def test_a_down_primary_followed_by_an_open_backup_is_the_final_failure() -> None:
    r = rig(primary=[down("smtp", "connection refused")])
    r.breaker.force_open("smtp-2", T0)

    failure = await failure_of(r.sender, email())

    # No other provider was tried after it, so it is not a failover.
    assert failure.provider == "smtp"
    assert failure.failovers == ()
    assert failure.error_class is ErrorClass.PROVIDER_DOWN


async def test_repeated_failures_open_the_breaker_and_later_sends_skip_the_primary() -> None:
    r = rig(primary=[down("smtp")] * 3)

    for i in range(3):
        delivered = await r.sender.send(email(f"n-{i}"))
        assert [f.provider for f in delivered.failovers] == ["smtp"]
    delivered = await r.sender.send(email("n-3"))

    assert delivered.failovers == ()
    assert delivered.result.provider == "smtp-2"
    assert len(r.primary.calls) == 3
    assert await r.breaker.state("smtp", r.clock.now()) is BreakerState.OPEN


async def test_chain_of_one_raises_the_providers_own_failure() -> None:
    clock = FixedClock(T0)
    failure = DeliveryFailed(
        ErrorClass.PROVIDER_DOWN, "503", provider="smtp", retry_after=timedelta(seconds=9)
    )
    sender = FailoverSender(Channel.EMAIL, [FakeProvider("smtp", clock, failure)], clock=clock)

    assert await failure_of(sender, email()) is failure


async def test_the_log_line_of_a_failure_leaves_out_what_the_receiver_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FixedClock(T0)
    failure = DeliveryFailed(
        ErrorClass.PERMANENT,
        "HTTP 400: {'error': 'customer 4711 unknown'}",
        provider="webhook",
        summary="HTTP 400",
    )
    sender = FailoverSender(Channel.EMAIL, [FakeProvider("webhook", clock, failure)], clock=clock)
    caplog.set_level(logging.INFO, logger="application.failover")

    assert (await failure_of(sender, email())).message.endswith("4711 unknown'}")

    [line] = [r.getMessage() for r in caplog.records if r.name == "application.failover"]
    assert "did not take notification n-1" in line
    assert line.endswith("PERMANENT: HTTP 400")
    assert "4711" not in line


# -- pinning ---------------------------------------------------------------------------------


async def test_pinned_provider_is_used_even_when_listed_second() -> None:
    r = rig()

    delivered = await r.sender.send(pinned_to("smtp-2"))

    assert delivered.result.provider == "smtp-2"
    assert r.primary.calls == []


async def test_pinned_provider_is_used_even_with_its_breaker_open() -> None:
    r = rig()
    r.breaker.force_open("smtp-2", T0)

    delivered = await r.sender.send(pinned_to("smtp-2"))

    assert delivered.result.provider == "smtp-2"
    assert r.primary.calls == []


async def test_pinned_provider_down_is_final_never_failed_over() -> None:
    r = rig(backup=[down("smtp-2")])

    failure = await failure_of(r.sender, pinned_to("smtp-2"))

    assert failure.provider == "smtp-2"
    assert failure.error_class is ErrorClass.PROVIDER_DOWN
    assert failure.failovers == ()
    assert r.primary.calls == []


async def test_pinned_provider_over_its_rate_is_retried_later_not_elsewhere() -> None:
    r = rig(rates={"smtp-2": 1})
    r.limiter.exhaust("smtp-2", T0 + timedelta(seconds=5))

    failure = await failure_of(r.sender, pinned_to("smtp-2"))

    assert failure.error_class is ErrorClass.TRANSIENT
    assert failure.provider == "smtp-2"
    assert failure.retry_after == timedelta(seconds=5)
    assert r.primary.calls == r.backup.calls == []


async def test_pin_to_a_provider_no_longer_configured_uses_the_chain() -> None:
    r = rig()

    delivered = await r.sender.send(pinned_to("smtp-old"))

    assert delivered.result.provider == "smtp"


# -- rate limits -----------------------------------------------------------------------------


async def test_short_rate_wait_is_slept_then_the_same_provider_is_used() -> None:
    r = rig(rates={"smtp": 10})
    r.limiter.exhaust("smtp", T0 + timedelta(milliseconds=300))

    delivered = await r.sender.send(email())

    assert r.sleeps == [0.3]
    assert delivered.result.provider == "smtp"
    assert r.backup.calls == []
    assert r.limiter.granted == [("smtp", T0 + timedelta(milliseconds=300))]


async def test_long_rate_wait_moves_on_to_the_backup() -> None:
    r = rig(rates={"smtp": 10})
    r.limiter.exhaust("smtp", T0 + timedelta(seconds=3))

    delivered = await r.sender.send(email())

    assert r.sleeps == []
    assert delivered.result.provider == "smtp-2"
    assert delivered.failovers == ()
    assert r.primary.calls == []


async def test_every_provider_rate_limited_is_transient_with_the_shortest_wait() -> None:
    r = rig(rates={"smtp": 1, "smtp-2": 1})
    r.limiter.exhaust("smtp", T0 + timedelta(seconds=4))
    r.limiter.exhaust("smtp-2", T0 + timedelta(seconds=2))

    failure = await failure_of(r.sender, email())

    assert failure.error_class is ErrorClass.TRANSIENT
    assert failure.retry_after == timedelta(seconds=2)
    assert failure.provider == "smtp"
    assert r.primary.calls == r.backup.calls == []


class ContendedLimiter(FakeLimiter):
    """Another worker always gets there first: the slot is 0.4 s away again every time."""

    async def acquire(self, provider: str, now: datetime) -> timedelta:
        return timedelta(milliseconds=400) if provider == "smtp" else timedelta(0)


async def test_total_rate_wait_is_bounded_when_others_keep_taking_the_slot() -> None:
    r = rig(max_rate_wait=timedelta(seconds=1), limiter=ContendedLimiter({}))

    delivered = await r.sender.send(email())

    assert r.sleeps == [0.4, 0.4]
    assert delivered.result.provider == "smtp-2"


async def test_open_breaker_costs_no_rate_slot_and_no_sleep() -> None:
    r = rig(rates={"smtp": 10})
    r.limiter.exhaust("smtp", T0 + timedelta(milliseconds=500))
    r.breaker.force_open("smtp", T0)

    await r.sender.send(email())

    assert r.sleeps == []
    assert [p for p, _ in r.limiter.granted] == []


# -- adapter bugs and an unreachable store ---------------------------------------------------


async def test_unexpected_exception_pins_to_the_provider_as_maybe_accepted() -> None:
    r = rig(primary=[KeyError("message_id")])

    failure = await failure_of(r.sender, email())

    assert failure.error_class is ErrorClass.MAYBE_ACCEPTED
    assert failure.provider == "smtp"
    assert isinstance(failure.__cause__, KeyError)
    assert r.backup.calls == []
    assert r.breaker.log == [("failure", "smtp")]


async def test_unreachable_breaker_and_limiter_fail_open() -> None:
    clock = FixedClock(T0)
    store = UnreachableStore()
    primary = FakeProvider("smtp", clock)
    sender = FailoverSender(Channel.EMAIL, [primary], clock=clock, breaker=store, limiter=store)

    delivered = await sender.send(email())

    # Delivered, and the lost record_success did not turn it into a failure (a duplicate).
    assert delivered.result.provider == "smtp"


class ReadOnlyBreaker(FakeBreaker):
    """Allows, but its store refuses writes (a Redis replica promoted away under us)."""

    async def record_success(self, provider: str, now: datetime) -> None:
        raise RuntimeError("READONLY You can't write against a read only replica.")

    async def record_failure(self, provider: str, now: datetime) -> None:
        raise RuntimeError("READONLY You can't write against a read only replica.")


async def test_a_breaker_error_after_acceptance_never_turns_it_into_a_failure() -> None:
    clock = FixedClock(T0)
    primary = FakeProvider("smtp", clock)
    sender = FailoverSender(Channel.EMAIL, [primary], clock=clock, breaker=ReadOnlyBreaker())

    delivered = await sender.send(email())

    assert delivered.result.provider == "smtp"
    assert len(primary.calls) == 1


def test_rejects_providers_of_another_channel_and_duplicate_names() -> None:
    clock = FixedClock(T0)
    sms = FakeProvider("twilio", clock)
    sms.channel = Channel.SMS
    with pytest.raises(ValueError, match="do not serve"):
        FailoverSender(Channel.EMAIL, [sms], clock=clock)
    with pytest.raises(ValueError, match="unique"):
        FailoverSender(
            Channel.EMAIL, [FakeProvider("smtp", clock), FakeProvider("smtp", clock)], clock=clock
        )
    with pytest.raises(ValueError, match="at least one"):
        FailoverSender(Channel.EMAIL, [], clock=clock)
