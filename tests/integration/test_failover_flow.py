"""SMS provider failover on the real stack: SendNotification and DeliverNotification over
Postgres and the Redis scheduler, a FailoverSender over Twilio then Vonage (each speaking HTTP to
its sandbox peer) behind the Redis circuit breaker and rate limiter. A hand-moved clock drives
the scheduler, the breaker and the limiter, so cool-downs and backoffs pass without sleeping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis.asyncio as aioredis

from application.failover import FailoverSender
from application.ports.repositories import Tenant
from application.ports.scheduler import Claim
from application.ports.sender import BreakerState, Provider, Sender
from application.principal import Principal
from application.use_cases.administration import new_webhook_secret
from application.use_cases.commands import AddressInput, SendNotificationCommand
from application.use_cases.deliver_notification import DeliverNotification
from application.use_cases.manage_notification import GetNotification
from application.use_cases.preparation import NotificationPreparer
from application.use_cases.send_notification import SendNotification
from domain.notification import (
    AttemptOutcome,
    Channel,
    Content,
    ErrorClass,
    Notification,
    RetryPolicy,
    Status,
)
from infrastructure.clock import UuidV7Generator
from infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from infrastructure.resilience import RedisCircuitBreaker, RedisRateLimiter
from infrastructure.sandbox.http import serve_asgi
from infrastructure.sandbox.sms import SandboxTwilio, SandboxVonage
from infrastructure.scheduling import RedisScheduler
from infrastructure.senders.sms import TwilioProvider, VonageProvider
from infrastructure.templates import JinjaTemplateEngine, JinjaTemplateRenderer

pytestmark = pytest.mark.integration

TENANT = "tenant-a"
PRINCIPAL = Principal(TENANT, "svc-auth", "key-1")
LEASE = timedelta(seconds=30)
TO = "+447700900123"
INVALID_NUMBER = "+15005550001"  # the sandboxes' magic number: Twilio 400 / 21211
SENDER = "+15005550006"
ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
AUTH_TOKEN = "twilio-token"
API_KEY = "vonage-key"
API_SECRET = "vonage-secret"
BREAKER_FAILURES = 2
COOLDOWN = timedelta(seconds=30)
# Short, so the lost-answer case costs half a second; the hang outlasts it comfortably.
PROVIDER_TIMEOUT = 0.5
HANG = 5.0
# Backoff alone would retry within 10 ms: anything longer came from the provider.
POLICY = RetryPolicy(max_attempts=3, base_delay=timedelta(milliseconds=10))


class HandClock:
    def __init__(self) -> None:
        # Near real time: the ids (UUIDv7) and the peers' journals use the real clock.
        self.current = datetime.now(UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> None:
        self.current += delta


@dataclass
class Flow:
    uow: SqlUnitOfWorkFactory
    scheduler: RedisScheduler
    breaker: RedisCircuitBreaker
    send: SendNotification
    get: GetNotification
    deliver: DeliverNotification
    twilio: SandboxTwilio
    vonage: SandboxVonage
    clock: HandClock

    async def send_sms(self, request_id: str, to: str = TO) -> Notification:
        outcome = await self.send.execute(
            PRINCIPAL,
            SendNotificationCommand(
                request_id=request_id,
                user_id="user-7",
                channel=Channel.SMS,
                category="otp",
                content=Content("", f"Your code for {request_id} is 123456"),
                address=AddressInput("phone", to),
            ),
        )
        assert not outcome.replayed
        assert outcome.notification.status is Status.QUEUED
        return outcome.notification

    async def claim(self) -> list[Claim]:
        return await self.scheduler.claim(1, self.clock.now(), LEASE)

    async def deliver_next(self, expected_id: str) -> Status | None:
        [claim] = await self.claim()
        assert claim.notification_id == expected_id
        return await self.deliver.execute(claim)

    async def send_and_deliver(self, request_id: str, to: str = TO) -> Notification:
        sent = await self.send_sms(request_id, to)
        await self.deliver_next(sent.id)
        return await self.load(sent.id)

    async def load(self, notification_id: str) -> Notification:
        return await self.get.execute(PRINCIPAL, notification_id)

    async def twilio_breaker(self) -> BreakerState:
        return await self.breaker.state("twilio", self.clock.now())


def summary(n: Notification) -> list[tuple[str, AttemptOutcome, ErrorClass]]:
    return [(a.provider, a.outcome, a.error_class) for a in n.attempts]


def references(peer: SandboxTwilio | SandboxVonage) -> list[str]:
    return [e["reference"] for e in peer.journal.entries]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(follow_redirects=False) as client:
        yield client


@pytest.fixture
async def twilio_peer() -> AsyncIterator[tuple[SandboxTwilio, str]]:
    peer = SandboxTwilio(ACCOUNT_SID, AUTH_TOKEN)
    running = await serve_asgi(peer)
    yield peer, running.base_url
    await running.close()


@pytest.fixture
async def vonage_peer() -> AsyncIterator[tuple[SandboxVonage, str]]:
    peer = SandboxVonage(API_KEY, API_SECRET)
    running = await serve_asgi(peer)
    yield peer, running.base_url
    await running.close()


def make_flow(
    uow: SqlUnitOfWorkFactory,
    scheduler: RedisScheduler,
    redis_client: aioredis.Redis,
    http: httpx.AsyncClient,
    twilio_peer: tuple[SandboxTwilio, str],
    vonage_peer: tuple[SandboxVonage, str],
    *,
    rates: dict[str, float] | None = None,
    max_rate_wait: timedelta = timedelta(seconds=1),
) -> Flow:
    clock = HandClock()
    breaker = RedisCircuitBreaker(
        redis_client,
        failure_threshold=BREAKER_FAILURES,
        window=timedelta(minutes=1),
        cooldown=COOLDOWN,
    )
    providers: list[Provider] = [
        TwilioProvider(
            http,
            base_url=twilio_peer[1],
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            from_number=SENDER,
            timeout=PROVIDER_TIMEOUT,
        ),
        VonageProvider(
            http,
            base_url=vonage_peer[1],
            api_key=API_KEY,
            api_secret=API_SECRET,
            from_number=SENDER,
            timeout=PROVIDER_TIMEOUT,
        ),
    ]
    senders: dict[Channel, Sender] = {
        Channel.SMS: FailoverSender(
            Channel.SMS,
            providers,
            clock=clock,
            breaker=breaker,
            limiter=RedisRateLimiter(redis_client, rates or {}),
            max_rate_wait=max_rate_wait,
            breaker_cooldown=COOLDOWN,
        )
    }
    preparer = NotificationPreparer(
        JinjaTemplateRenderer(uow, JinjaTemplateEngine()), UuidV7Generator(), frozenset(senders)
    )
    return Flow(
        uow=uow,
        scheduler=scheduler,
        breaker=breaker,
        send=SendNotification(uow, scheduler, preparer, clock),
        get=GetNotification(uow),
        # The top of the jitter range: each backoff is exactly its cap.
        deliver=DeliverNotification(
            uow, scheduler, senders, {Channel.SMS: POLICY}, clock, lambda: 1.0
        ),
        twilio=twilio_peer[0],
        vonage=vonage_peer[0],
        clock=clock,
    )


async def add_tenant(uow: SqlUnitOfWorkFactory) -> None:
    async with uow() as u:
        await u.tenants.add(Tenant(TENANT, new_webhook_secret()), datetime.now(UTC))
        await u.commit()


@pytest.fixture
async def flow(
    uow: SqlUnitOfWorkFactory,
    scheduler: RedisScheduler,
    redis_client: aioredis.Redis,
    http: httpx.AsyncClient,
    twilio_peer: tuple[SandboxTwilio, str],
    vonage_peer: tuple[SandboxVonage, str],
) -> Flow:
    await add_tenant(uow)
    return make_flow(uow, scheduler, redis_client, http, twilio_peer, vonage_peer)


# -- failover on PROVIDER_DOWN ----------------------------------------------------------------


async def test_a_twilio_503_fails_over_to_vonage_in_the_same_delivery(flow: Flow) -> None:
    flow.twilio.fail_next(503)
    sent = await flow.send_sms("req-1")

    assert await flow.deliver_next(sent.id) is Status.SENT

    stored = await flow.load(sent.id)
    assert stored.status is Status.SENT
    assert stored.status_reason == "accepted by vonage"
    assert summary(stored) == [
        ("twilio", AttemptOutcome.FAILED_OVER, ErrorClass.PROVIDER_DOWN),
        ("vonage", AttemptOutcome.ACCEPTED, ErrorClass.NONE),
    ]
    failed_over, accepted = stored.attempts
    assert [a.channel for a in stored.attempts] == ["SMS", "SMS"]
    assert "503" in failed_over.error_message
    assert failed_over.provider_message_id == ""
    [entry] = flow.vonage.journal.entries
    assert entry["reference"] == sent.id
    assert entry["to"] == TO
    assert accepted.provider_message_id == entry["message_id"] != ""
    # Twilio was asked once and took nothing.
    assert flow.twilio.requests_received == 1
    assert flow.twilio.journal.entries == []
    assert flow.vonage.requests_received == 1
    assert not await flow.scheduler.contains(sent.id)
    assert await flow.claim() == []


async def test_the_breaker_sends_to_the_backup_then_back_once_a_probe_succeeds(
    flow: Flow,
) -> None:
    flow.twilio.fail_next(503, times=BREAKER_FAILURES)
    for i in range(BREAKER_FAILURES):
        stored = await flow.send_and_deliver(f"down-{i}")
        assert [a.provider for a in stored.attempts] == ["twilio", "vonage"]
    assert flow.twilio.requests_received == BREAKER_FAILURES
    assert await flow.twilio_breaker() is BreakerState.OPEN

    # Open: straight to Vonage, Twilio not even asked.
    skipped = await flow.send_and_deliver("while-open")
    assert skipped.status is Status.SENT
    assert summary(skipped) == [("vonage", AttemptOutcome.ACCEPTED, ErrorClass.NONE)]
    assert flow.twilio.requests_received == BREAKER_FAILURES

    # Just short of the cool-down it is still open.
    flow.clock.advance(COOLDOWN - timedelta(seconds=1))
    still = await flow.send_and_deliver("almost")
    assert [a.provider for a in still.attempts] == ["vonage"]
    assert flow.twilio.requests_received == BREAKER_FAILURES

    # Past it, the next delivery is Twilio's probe; it succeeds and closes the breaker.
    flow.clock.advance(timedelta(seconds=1))
    probe = await flow.send_and_deliver("probe")
    assert summary(probe) == [("twilio", AttemptOutcome.ACCEPTED, ErrorClass.NONE)]
    assert await flow.twilio_breaker() is BreakerState.CLOSED

    after = await flow.send_and_deliver("after")
    assert summary(after) == [("twilio", AttemptOutcome.ACCEPTED, ErrorClass.NONE)]

    assert references(flow.twilio) == [probe.id, after.id]
    assert [a.provider_message_id for a in (*probe.attempts, *after.attempts)] == [
        e["message_id"] for e in flow.twilio.journal.entries
    ]
    assert flow.twilio.requests_received == BREAKER_FAILURES + 2
    assert len(references(flow.vonage)) == BREAKER_FAILURES + 2


# -- the lost answer: pinned to the provider that may hold it --------------------------------


async def lose_twilios_answer(flow: Flow) -> Notification:
    """A notification whose request Twilio took but whose answer never came back in time."""
    flow.twilio.hang_next(HANG)
    sent = await flow.send_sms("lost-answer")
    assert await flow.deliver_next(sent.id) is Status.QUEUED

    stored = await flow.load(sent.id)
    assert summary(stored) == [
        ("twilio", AttemptOutcome.TRANSIENT_FAILURE, ErrorClass.MAYBE_ACCEPTED)
    ]
    assert stored.pinned_provider == "twilio"
    assert stored.status is Status.QUEUED
    assert references(flow.twilio) == [sent.id]
    assert flow.vonage.requests_received == 0
    return stored


async def retry_when_due(flow: Flow, n: Notification) -> Notification:
    # Backed off: not claimable before its due time.
    assert await flow.claim() == []
    flow.clock.current = n.due_at
    assert await flow.deliver_next(n.id) is Status.SENT
    return await flow.load(n.id)


async def test_a_timeout_after_sending_is_retried_on_twilio_with_the_same_reference(
    flow: Flow,
) -> None:
    lost = await lose_twilios_answer(flow)

    stored = await retry_when_due(flow, lost)

    assert summary(stored) == [
        ("twilio", AttemptOutcome.TRANSIENT_FAILURE, ErrorClass.MAYBE_ACCEPTED),
        ("twilio", AttemptOutcome.ACCEPTED, ErrorClass.NONE),
    ]
    # The peer recognised the reference: the message was taken once, its id given again.
    assert flow.twilio.requests_received == 2
    assert [r.headers["i-twilio-idempotency-token"] for r in flow.twilio.requests] == [
        lost.id,
        lost.id,
    ]
    [entry] = flow.twilio.journal.entries
    assert entry["reference"] == lost.id
    assert stored.attempts[1].provider_message_id == entry["message_id"]
    assert flow.vonage.requests_received == 0
    assert not await flow.scheduler.contains(lost.id)


async def test_a_pinned_retry_goes_to_twilio_even_while_its_breaker_is_open(
    flow: Flow,
) -> None:
    lost = await lose_twilios_answer(flow)
    # The lost answer counted as one failure; a 503 on another notification makes the second.
    flow.twilio.fail_next(503)
    other = await flow.send_and_deliver("other")
    assert [a.provider for a in other.attempts] == ["twilio", "vonage"]
    assert await flow.twilio_breaker() is BreakerState.OPEN

    stored = await retry_when_due(flow, lost)

    assert [a.provider for a in stored.attempts] == ["twilio", "twilio"]
    assert stored.attempts[1].outcome is AttemptOutcome.ACCEPTED
    assert references(flow.twilio) == [lost.id]
    # Vonage only ever saw the other notification.
    assert references(flow.vonage) == [other.id]
    # An outcome while open decides nothing: the breaker waits for its probe.
    assert await flow.twilio_breaker() is BreakerState.OPEN


# -- answers about the notification: no failover ---------------------------------------------


async def test_a_429_with_retry_after_is_retried_on_twilio_after_it(flow: Flow) -> None:
    flow.twilio.fail_next(429, retry_after="7")
    sent = await flow.send_sms("busy")
    delivered_at = flow.clock.now()

    assert await flow.deliver_next(sent.id) is Status.QUEUED

    stored = await flow.load(sent.id)
    [attempt] = stored.attempts
    assert (attempt.provider, attempt.outcome, attempt.error_class) == (
        "twilio",
        AttemptOutcome.TRANSIENT_FAILURE,
        ErrorClass.TRANSIENT,
    )
    assert "429" in attempt.error_message
    assert stored.due_at >= delivered_at + timedelta(seconds=7)
    assert stored.pinned_provider is None
    assert flow.vonage.requests_received == 0
    # A provider answering 429 is up: the breaker stays closed.
    assert await flow.twilio_breaker() is BreakerState.CLOSED

    flow.clock.advance(timedelta(seconds=6.9))
    assert await flow.claim() == []
    flow.clock.current = stored.due_at
    assert await flow.deliver_next(sent.id) is Status.SENT
    stored = await flow.load(sent.id)
    assert [a.provider for a in stored.attempts] == ["twilio", "twilio"]
    assert references(flow.twilio) == [sent.id]
    assert flow.vonage.requests_received == 0


async def test_an_invalid_number_fails_at_once_without_trying_vonage(flow: Flow) -> None:
    sent = await flow.send_sms("invalid", to=INVALID_NUMBER)

    assert await flow.deliver_next(sent.id) is Status.FAILED

    stored = await flow.load(sent.id)
    assert stored.status is Status.FAILED
    assert "21211" in stored.status_reason
    assert summary(stored) == [("twilio", AttemptOutcome.PERMANENT_FAILURE, ErrorClass.PERMANENT)]
    assert flow.twilio.requests_received == 1
    assert flow.twilio.journal.entries == []
    assert flow.vonage.requests_received == 0
    assert not await flow.scheduler.contains(sent.id)
    assert await flow.twilio_breaker() is BreakerState.CLOSED


# -- the shared rate limit --------------------------------------------------------------------


async def test_a_provider_over_its_rate_is_skipped_for_the_next_one(
    uow: SqlUnitOfWorkFactory,
    scheduler: RedisScheduler,
    redis_client: aioredis.Redis,
    http: httpx.AsyncClient,
    twilio_peer: tuple[SandboxTwilio, str],
    vonage_peer: tuple[SandboxVonage, str],
) -> None:
    await add_tenant(uow)
    # One a second, a burst of one, and no waiting for a slot.
    flow = make_flow(
        uow,
        scheduler,
        redis_client,
        http,
        twilio_peer,
        vonage_peer,
        rates={"twilio": 1.0},
        max_rate_wait=timedelta(0),
    )

    first = await flow.send_and_deliver("rate-1")
    second = await flow.send_and_deliver("rate-2")

    assert summary(first) == [("twilio", AttemptOutcome.ACCEPTED, ErrorClass.NONE)]
    # Skipped for its rate, Twilio was not tried: no FAILED_OVER attempt, no request.
    assert summary(second) == [("vonage", AttemptOutcome.ACCEPTED, ErrorClass.NONE)]
    assert flow.twilio.requests_received == 1
    assert references(flow.twilio) == [first.id]
    assert references(flow.vonage) == [second.id]

    # A second later Twilio has a slot again.
    flow.clock.advance(timedelta(seconds=1))
    third = await flow.send_and_deliver("rate-3")
    assert summary(third) == [("twilio", AttemptOutcome.ACCEPTED, ErrorClass.NONE)]
