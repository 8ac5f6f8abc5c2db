"""The whole delivery path on real parts: SendNotification and DeliverNotification over the SQL
unit of work, the Redis scheduler, the webhook sender talking HTTP to a local receiver that checks
Standard Webhooks signatures with the reference library, and the in-app inbox."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from application.failover import FailoverSender
from application.ports.repositories import Tenant
from application.ports.scheduler import Claim, QueueItem
from application.principal import Principal
from application.use_cases.administration import new_webhook_secret
from application.use_cases.commands import AddressInput, SendNotificationCommand, TemplateInput
from application.use_cases.deliver_notification import DeliverNotification
from application.use_cases.manage_notification import CancelNotification
from application.use_cases.preparation import NotificationPreparer
from application.use_cases.send_notification import SendNotification
from application.use_cases.templates import CreateTemplate, TemplateDraft
from domain.notification import (
    AttemptOutcome,
    Channel,
    Content,
    ErrorClass,
    Notification,
    Priority,
    RetryPolicy,
    Status,
)
from domain.template import (
    LocalizedContent,
    TemplateVersionContent,
    VariableDeclaration,
    VariableType,
    WebhookContent,
)
from infrastructure.clock import SystemClock, UuidV7Generator
from infrastructure.persistence.tenant_secrets import TenantWebhookSecrets
from infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from infrastructure.scheduling import RedisScheduler
from infrastructure.senders import SsrfGuard, WebhookSender
from infrastructure.senders.in_app import InAppSender
from infrastructure.senders.webhook import WebhookHttp
from infrastructure.templates import JinjaTemplateEngine, JinjaTemplateRenderer

pytestmark = pytest.mark.integration

TENANT = "tenant-a"
PRINCIPAL = Principal(TENANT, "svc-orders", "key-1")
LEASE = timedelta(seconds=30)
REASONS = {200: "OK", 410: "Gone", 500: "Internal Server Error", 503: "Service Unavailable"}


# -- a minimal HTTP/1.1 webhook receiver ------------------------------------------------------


@dataclass
class Hold:
    """A scripted reply that waits for ``release`` before answering ``status``."""

    release: asyncio.Event
    status: int = 200
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: Any = None
    verify_error: str = ""


@dataclass
class Receiver:
    """Answers each request with the next entry of ``script`` (``default`` once it runs out),
    after verifying its signature against ``secret``."""

    secret: str = ""
    script: list[int | Hold] = field(default_factory=list)
    default: int = 200
    # Extra response headers, sent with every answer.
    headers: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/notify"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            record = Received(headers, body)
            try:
                record.verified = Webhook(self.secret).verify(body, headers)
            except Exception as exc:
                record.verify_error = repr(exc)
            self.received.append(record)
            action = self.script.pop(0) if self.script else self.default
            if isinstance(action, Hold):
                action.arrived.set()
                await action.release.wait()
                action = action.status
            reason = REASONS.get(action, "Status")
            lines = [f"HTTP/1.1 {action} {reason}", *(f"{k}: {v}" for k, v in self.headers.items())]
            lines += ["content-length: 0", "connection: close", "", ""]
            head = "\r\n".join(lines)
            writer.write(head.encode("latin-1"))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


# -- the wiring -------------------------------------------------------------------------------


@dataclass
class Flow:
    uow: SqlUnitOfWorkFactory
    scheduler: RedisScheduler
    receiver: Receiver
    send: SendNotification
    cancel: CancelNotification
    senders: dict[Channel, Any]
    clock: SystemClock

    def deliverer(self, policy: RetryPolicy | None = None) -> DeliverNotification:
        return DeliverNotification(
            self.uow,
            self.scheduler,
            self.senders,
            dict.fromkeys(Channel, policy or RetryPolicy(max_attempts=3)),
            self.clock,
            # The top of the jitter range: each backoff is exactly its cap.
            lambda: 1.0,
        )

    async def send_webhook(self, request_id: str = "req-1", **kw: Any) -> Notification:
        command = SendNotificationCommand(
            request_id=request_id,
            user_id=kw.pop("user_id", "user-1"),
            channel=Channel.WEBHOOK,
            category="order_shipped",
            content=Content("Shipped", f"Order for {request_id} is on its way"),
            address=AddressInput("webhook_url", self.receiver.url),
            metadata={"order": "42"},
            **kw,
        )
        outcome = await self.send.execute(PRINCIPAL, command)
        assert not outcome.replayed
        return outcome.notification

    async def claim(self, limit: int = 1, lease: timedelta = LEASE) -> list[Claim]:
        return await self.scheduler.claim(limit, self.clock.now(), lease)

    async def claim_when_due(self, within: float = 3.0, lease: timedelta = LEASE) -> Claim:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            claims = await self.claim(1, lease)
            if claims:
                return claims[0]
            await asyncio.sleep(0.01)
        raise AssertionError(f"nothing became claimable within {within}s")

    async def load(self, notification_id: str) -> Notification:
        async with self.uow() as u:
            return await u.notifications.get(TENANT, notification_id)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[WebhookHttp]:
    client = WebhookHttp()
    yield client
    await client.aclose()


@pytest.fixture
async def flow(
    uow: SqlUnitOfWorkFactory,
    scheduler: RedisScheduler,
    receiver: Receiver,
    http: WebhookHttp,
) -> Flow:
    clock = SystemClock()
    receiver.secret = new_webhook_secret()
    async with uow() as u:
        await u.tenants.add(Tenant(TENANT, receiver.secret), clock.now())
        await u.commit()
    senders: dict[Channel, Any] = {
        Channel.WEBHOOK: FailoverSender(
            Channel.WEBHOOK,
            [
                WebhookSender(
                    http, TenantWebhookSecrets(uow), SsrfGuard(allow_private=True), timeout=5.0
                )
            ],
            clock=clock,
        ),
        Channel.IN_APP: FailoverSender(Channel.IN_APP, [InAppSender()], clock=clock),
    }
    preparer = NotificationPreparer(
        JinjaTemplateRenderer(uow, JinjaTemplateEngine()), UuidV7Generator(), frozenset(senders)
    )
    return Flow(
        uow=uow,
        scheduler=scheduler,
        receiver=receiver,
        send=SendNotification(uow, scheduler, preparer, clock),
        cancel=CancelNotification(uow, scheduler, clock),
        senders=senders,
        clock=clock,
    )


def outcomes(n: Notification) -> list[AttemptOutcome]:
    return [a.outcome for a in n.attempts]


# -- webhook ----------------------------------------------------------------------------------


async def test_a_webhook_is_sent_signed_and_recorded(flow: Flow) -> None:
    sent = await flow.send_webhook()
    assert sent.status is Status.QUEUED
    assert await flow.scheduler.contains(sent.id)

    [claim] = await flow.claim()
    assert claim.notification_id == sent.id
    status = await flow.deliverer().execute(claim)

    assert status is Status.SENT
    stored = await flow.load(sent.id)
    assert stored.status is Status.SENT
    assert stored.status_reason == "accepted by webhook"
    [attempt] = stored.attempts
    assert attempt.outcome is AttemptOutcome.ACCEPTED
    assert attempt.provider == "webhook"
    assert attempt.finished_at is not None
    assert attempt.finished_at >= attempt.started_at
    assert [c.status for c in stored.history] == [
        Status.PENDING,
        Status.QUEUED,
        Status.SENDING,
        Status.SENT,
    ]
    # The lease was released: nothing is left in the queue.
    assert not await flow.scheduler.contains(sent.id)
    assert await flow.claim() == []

    [got] = flow.receiver.received
    assert got.verify_error == ""
    assert got.headers["webhook-id"] == sent.id
    assert got.verified["data"]["id"] == sent.id
    assert got.verified["data"]["body"] == "Order for req-1 is on its way"
    assert got.verified["data"]["metadata"] == {"order": "42"}
    assert json.loads(got.body) == got.verified
    # Someone else's secret does not verify it.
    with pytest.raises(Exception, match=r"(?i)signature"):
        Webhook(new_webhook_secret()).verify(got.body, got.headers)


async def test_a_replayed_send_is_delivered_once(flow: Flow) -> None:
    first = await flow.send_webhook("req-same")
    command = SendNotificationCommand(
        request_id="req-same",
        user_id="user-1",
        channel=Channel.WEBHOOK,
        category="order_shipped",
        content=Content("Shipped", "Order for req-same is on its way"),
        address=AddressInput("webhook_url", flow.receiver.url),
        metadata={"order": "42"},
    )
    replay = await flow.send.execute(PRINCIPAL, command)
    assert replay.replayed
    assert replay.notification.id == first.id

    claims = await flow.claim(10)
    assert [c.notification_id for c in claims] == [first.id]
    assert await flow.deliverer().execute(claims[0]) is Status.SENT
    assert len(flow.receiver.received) == 1


async def test_transient_failures_are_retried_after_the_backoff_with_the_same_id(
    flow: Flow,
) -> None:
    flow.receiver.script = [500, 500, 200]
    policy = RetryPolicy(max_attempts=3, base_delay=timedelta(milliseconds=100))
    deliver = flow.deliverer(policy)
    sent = await flow.send_webhook()

    statuses = []
    early: list[Claim] = []
    for _ in range(3):
        claim = early[0] if early else await flow.claim_when_due()
        claimed_at = flow.clock.now()
        statuses.append(await deliver.execute(claim))
        if statuses[-1] is Status.QUEUED:
            stored = await flow.load(sent.id)
            assert stored.due_at > claimed_at
            assert await flow.scheduler.contains(sent.id)
            # Backed off: not claimable before its due time.
            early = await flow.claim()
            if early:
                assert flow.clock.now() >= stored.due_at

    assert statuses == [Status.QUEUED, Status.QUEUED, Status.SENT]
    stored = await flow.load(sent.id)
    assert stored.status is Status.SENT
    assert outcomes(stored) == [
        AttemptOutcome.TRANSIENT_FAILURE,
        AttemptOutcome.TRANSIENT_FAILURE,
        AttemptOutcome.ACCEPTED,
    ]
    assert [a.error_class for a in stored.attempts[:2]] == [ErrorClass.TRANSIENT] * 2
    assert "HTTP 500" in stored.attempts[0].error_message
    # Exponential: the second wait (cap 200 ms) is longer than the first (cap 100 ms).
    gaps = [
        (stored.attempts[i + 1].started_at - stored.attempts[i].finished_at)  # type: ignore[operator]
        for i in range(2)
    ]
    assert gaps[0] >= timedelta(milliseconds=100) - timedelta(milliseconds=5)
    assert gaps[1] >= timedelta(milliseconds=200) - timedelta(milliseconds=5)

    received = flow.receiver.received
    assert len(received) == 3
    assert {r.headers["webhook-id"] for r in received} == {sent.id}
    assert all(r.verify_error == "" for r in received)
    assert len({r.body for r in received}) == 1
    assert not await flow.scheduler.contains(sent.id)


async def test_a_receiver_that_keeps_failing_fails_after_max_attempts(flow: Flow) -> None:
    flow.receiver.default = 500
    deliver = flow.deliverer(RetryPolicy(max_attempts=2, base_delay=timedelta(milliseconds=20)))
    sent = await flow.send_webhook()

    assert await deliver.execute(await flow.claim_when_due()) is Status.QUEUED
    assert await deliver.execute(await flow.claim_when_due()) is Status.FAILED

    stored = await flow.load(sent.id)
    assert stored.status is Status.FAILED
    assert stored.status_reason.startswith("gave up after 2 attempts")
    assert outcomes(stored) == [AttemptOutcome.TRANSIENT_FAILURE] * 2
    assert len(flow.receiver.received) == 2
    assert not await flow.scheduler.contains(sent.id)
    await asyncio.sleep(0.1)
    assert await flow.claim() == []
    assert len(flow.receiver.received) == 2


async def test_410_gone_fails_at_once(flow: Flow) -> None:
    flow.receiver.default = 410
    sent = await flow.send_webhook()

    assert await flow.deliverer().execute(await flow.claim_when_due()) is Status.FAILED

    stored = await flow.load(sent.id)
    assert stored.status is Status.FAILED
    assert "410" in stored.status_reason
    [attempt] = stored.attempts
    assert attempt.outcome is AttemptOutcome.PERMANENT_FAILURE
    assert attempt.error_class is ErrorClass.PERMANENT
    assert len(flow.receiver.received) == 1
    assert not await flow.scheduler.contains(sent.id)
    assert await flow.claim() == []


async def test_retry_after_from_the_receiver_delays_the_next_attempt(flow: Flow) -> None:
    flow.receiver.default = 503
    flow.receiver.headers = {"retry-after": "2"}
    # The policy alone would retry within 10 ms.
    deliver = flow.deliverer(RetryPolicy(max_attempts=3, base_delay=timedelta(milliseconds=10)))
    sent = await flow.send_webhook()

    before = flow.clock.now()
    assert await deliver.execute(await flow.claim_when_due()) is Status.QUEUED

    stored = await flow.load(sent.id)
    assert stored.due_at >= before + timedelta(seconds=2)
    assert stored.attempts[0].error_class is ErrorClass.TRANSIENT
    await asyncio.sleep(0.1)
    assert await flow.claim() == []
    depth = await flow.scheduler.depth(flow.clock.now())
    assert (depth["delayed"], depth["leased"]) == (1, 0)


async def test_a_claim_for_a_notification_that_was_never_committed_is_dropped(
    flow: Flow,
) -> None:
    now = flow.clock.now()
    await flow.scheduler.enqueue([QueueItem("ghost", Priority.HIGH, now)], now)
    [claim] = await flow.claim()
    assert await flow.deliverer().execute(claim) is None
    assert not await flow.scheduler.contains("ghost")
    assert flow.receiver.received == []


async def test_a_templated_webhook_is_rendered_then_delivered(flow: Flow) -> None:
    def payload(order: str, greeting: str) -> LocalizedContent:
        return LocalizedContent(
            "de" if "Bestellung" in order else "en",
            webhook=WebhookContent({"order": order, "greeting": greeting, "n": [1]}),
        )

    created = await CreateTemplate(flow.uow, JinjaTemplateEngine(), flow.clock).execute(
        PRINCIPAL,
        TemplateDraft(
            "shipped",
            TemplateVersionContent(
                (
                    VariableDeclaration("order", VariableType.INTEGER),
                    VariableDeclaration("name", VariableType.STRING),
                ),
                (
                    payload("Order {{ order }}", "Hi {{ name }}!"),
                    payload("Bestellung {{ order }}", "Hallo {{ name }}!"),
                ),
            ),
            default_locale="en",
            activate=True,
        ),
    )
    outcome = await flow.send.execute(
        PRINCIPAL,
        SendNotificationCommand(
            request_id="tpl-1",
            user_id="user-1",
            channel=Channel.WEBHOOK,
            category="order_shipped",
            template=TemplateInput("shipped", {"order": 42, "name": "Ada"}, "de-AT"),
            address=AddressInput("webhook_url", flow.receiver.url),
        ),
    )
    n = outcome.notification
    assert (n.template_name, n.template_version, n.locale) == (
        "shipped",
        created.version.version,
        "de",
    )

    assert await flow.deliverer().execute(await flow.claim_when_due()) is Status.SENT

    [got] = flow.receiver.received
    assert got.verify_error == ""
    stored = await flow.load(n.id)
    rendered = Content("", "", data={"order": "Bestellung 42", "greeting": "Hallo Ada!", "n": [1]})
    assert stored.content == rendered
    assert stored.content_hash == rendered.digest()


# -- in-app -----------------------------------------------------------------------------------


async def test_an_in_app_notification_is_delivered_to_the_inbox(flow: Flow) -> None:
    outcome = await flow.send.execute(
        PRINCIPAL,
        SendNotificationCommand(
            request_id="inbox-1",
            user_id="user-7",
            channel=Channel.IN_APP,
            category="welcome",
            content=Content("Welcome", "Glad you are here"),
        ),
    )
    nid = outcome.notification.id
    async with flow.uow() as u:
        assert await u.notifications.count_unread(TENANT, "user-7") == 0

    assert await flow.deliverer().execute(await flow.claim_when_due()) is Status.DELIVERED

    stored = await flow.load(nid)
    assert stored.status is Status.DELIVERED
    assert stored.unread
    [attempt] = stored.attempts
    assert (attempt.outcome, attempt.provider, attempt.provider_message_id) == (
        AttemptOutcome.ACCEPTED,
        "inbox",
        nid,
    )
    async with flow.uow() as u:
        assert await u.notifications.count_unread(TENANT, "user-7") == 1
        assert await u.notifications.count_unread(TENANT, "user-1") == 0
    assert flow.receiver.received == []


# -- cancellation, priority, scheduling -------------------------------------------------------


async def test_a_cancelled_notification_that_is_already_claimed_is_not_sent(flow: Flow) -> None:
    sent = await flow.send_webhook()
    [claim] = await flow.claim()

    cancelled = await flow.cancel.execute(PRINCIPAL, sent.id)
    assert cancelled.status is Status.CANCELLED
    # remove() leaves a held lease to its holder...
    assert await flow.scheduler.contains(sent.id)

    # ...which finds the record cancelled and lets go.
    assert await flow.deliverer().execute(claim) is None

    stored = await flow.load(sent.id)
    assert stored.status is Status.CANCELLED
    assert stored.attempts == []
    assert flow.receiver.received == []
    assert not await flow.scheduler.contains(sent.id)


async def test_critical_is_claimed_before_low(flow: Flow) -> None:
    low = await flow.send_webhook("req-low", priority=Priority.LOW)
    critical = await flow.send_webhook("req-critical", priority=Priority.CRITICAL)

    claims = await flow.claim(10)

    assert [c.notification_id for c in claims] == [critical.id, low.id]
    assert [c.priority for c in claims] == [Priority.CRITICAL, Priority.LOW]
    deliver = flow.deliverer()
    for claim in claims:
        assert await deliver.execute(claim) is Status.SENT
    assert [r.headers["webhook-id"] for r in flow.receiver.received] == [critical.id, low.id]


async def test_a_scheduled_send_waits_until_it_is_due(flow: Flow) -> None:
    scheduled_at = flow.clock.now() + timedelta(seconds=1.5)
    sent = await flow.send_webhook(scheduled_at=scheduled_at)
    assert sent.status is Status.QUEUED
    assert sent.status_reason == "scheduled"
    assert sent.due_at == scheduled_at

    assert await flow.claim(10) == []
    await asyncio.sleep(0.5)
    assert await flow.claim(10) == []
    assert await flow.scheduler.contains(sent.id)

    claim = await flow.claim_when_due(within=3.0)
    assert flow.clock.now() >= scheduled_at
    assert claim.notification_id == sent.id
    assert await flow.deliverer().execute(claim) is Status.SENT

    stored = await flow.load(sent.id)
    assert stored.attempts[0].started_at >= scheduled_at
    assert len(flow.receiver.received) == 1


async def test_a_notification_claimed_after_it_expired_is_not_sent(flow: Flow) -> None:
    expires_at = flow.clock.now() + timedelta(milliseconds=300)
    sent = await flow.send_webhook(expires_at=expires_at)
    await asyncio.sleep(0.35)

    claim = await flow.claim_when_due()
    assert await flow.deliverer().execute(claim) is Status.EXPIRED

    stored = await flow.load(sent.id)
    assert stored.status is Status.EXPIRED
    assert stored.attempts == []
    assert flow.receiver.received == []
    assert not await flow.scheduler.contains(sent.id)


# -- crash recovery and fencing ---------------------------------------------------------------


async def sleep_past(flow: Flow, moment: datetime) -> None:
    await asyncio.sleep(max((moment - flow.clock.now()).total_seconds(), 0) + 0.02)


async def begin_like_a_worker_that_then_crashes(flow: Flow, notification_id: str) -> None:
    async with flow.uow() as u:
        n = await u.notifications.get_for_delivery(notification_id)
        assert n is not None
        n.begin_attempt(flow.clock.now())
        await u.notifications.save(n)
        await u.commit()


async def test_an_expired_lease_is_recovered_and_delivered_by_another_worker(flow: Flow) -> None:
    sent = await flow.send_webhook()
    [first] = await flow.claim(lease=timedelta(milliseconds=400))
    await begin_like_a_worker_that_then_crashes(flow, sent.id)
    assert (await flow.load(sent.id)).status is Status.SENDING

    # While the lease holds, nobody else gets it and there is nothing to recover.
    assert await flow.claim() == []
    assert await flow.scheduler.recover_expired_leases(flow.clock.now(), 100) == 0
    await sleep_past(flow, first.lease_deadline)
    assert await flow.scheduler.recover_expired_leases(flow.clock.now(), 100) == 1

    [second] = await flow.claim()
    assert second.notification_id == sent.id
    assert second.token > first.token
    assert await flow.deliverer().execute(second) is Status.SENT

    stored = await flow.load(sent.id)
    assert stored.status is Status.SENT
    assert outcomes(stored) == [AttemptOutcome.ABANDONED, AttemptOutcome.ACCEPTED]
    assert stored.attempts[0].error_class is ErrorClass.LEASE_LOST
    assert stored.attempts[1].provider == "webhook"
    assert [(c.status, c.reason) for c in stored.history][2:4] == [
        (Status.SENDING, ""),
        (Status.SENDING, "previous attempt abandoned"),
    ]
    assert len(flow.receiver.received) == 1
    assert not await flow.scheduler.contains(sent.id)

    # The crashed worker coming back with its old claim changes nothing.
    assert await flow.deliverer().execute(first) is None
    assert (await flow.load(sent.id)) == stored
    assert len(flow.receiver.received) == 1


async def test_a_worker_that_outlived_its_lease_cannot_overwrite_the_newer_attempt(
    flow: Flow,
) -> None:
    release = asyncio.Event()
    hold = Hold(release, status=200)
    flow.receiver.script = [hold, 200]
    sent = await flow.send_webhook()

    [first] = await flow.claim(lease=timedelta(milliseconds=200))
    slow = asyncio.create_task(flow.deliverer().execute(first))
    await asyncio.wait_for(hold.arrived.wait(), 3)

    await sleep_past(flow, first.lease_deadline)
    assert await flow.scheduler.recover_expired_leases(flow.clock.now(), 100) == 1
    [second] = await flow.claim()
    assert await flow.deliverer().execute(second) is Status.SENT

    release.set()
    # The slow worker's acceptance arrives after the rescue: its save is refused.
    assert await asyncio.wait_for(slow, 5) is None

    stored = await flow.load(sent.id)
    assert stored.status is Status.SENT
    assert outcomes(stored) == [AttemptOutcome.ABANDONED, AttemptOutcome.ACCEPTED]
    received = flow.receiver.received
    assert [r.headers["webhook-id"] for r in received] == [sent.id, sent.id]
    assert not await flow.scheduler.contains(sent.id)
