"""Webhook secret rotation on the real Postgres: the rotated secrets are stored and read back,
concurrent rotations take turns, and a delivery is signed by both secrets during the overlap
and by the new one alone after it (checked with the reference library)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from application.ports.repositories import Tenant
from application.use_cases.administration import RotateWebhookSecret, new_webhook_secret
from domain.notification import (
    Address,
    Channel,
    Content,
    NewNotification,
    Notification,
    Priority,
)
from domain.recipient import Profile, Recipient, WebhookEndpoint
from infrastructure.clock import SystemClock
from infrastructure.persistence.tenant_secrets import TenantWebhookSecrets
from infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from infrastructure.sandbox.http import serve_asgi
from infrastructure.sandbox.webhook_sink import SandboxWebhookSink
from infrastructure.senders import SsrfGuard, WebhookSender
from infrastructure.senders.webhook import WebhookHttp

pytestmark = pytest.mark.integration

TENANT = "tenant-a"
OLD = new_webhook_secret()
HOUR = timedelta(hours=1)


class ClockAt:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


@pytest.fixture
async def db(uow: SqlUnitOfWorkFactory) -> SqlUnitOfWorkFactory:
    async with uow() as u:
        await u.tenants.add(Tenant(TENANT, OLD), datetime.now(UTC))
        await u.commit()
    return uow


async def stored(uow: SqlUnitOfWorkFactory) -> Tenant:
    async with uow() as u:
        tenant = await u.tenants.get(TENANT)
    assert tenant is not None
    return tenant


async def test_a_rotation_is_stored_with_its_overlap(db: SqlUnitOfWorkFactory) -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    rotated = await RotateWebhookSecret(db, ClockAt(now), 24 * HOUR).execute(TENANT)

    assert await stored(db) == rotated
    assert rotated.previous_webhook_secret == OLD
    assert rotated.previous_secret_expires_at == now + 24 * HOUR


async def test_a_tenant_never_rotated_reads_back_without_a_previous_secret(
    db: SqlUnitOfWorkFactory,
) -> None:
    assert await stored(db) == Tenant(TENANT, OLD)


async def test_concurrent_rotations_take_turns(db: SqlUnitOfWorkFactory) -> None:
    rotate = RotateWebhookSecret(db, SystemClock(), HOUR)
    first, second = await asyncio.gather(rotate.execute(TENANT), rotate.execute(TENANT))
    # Had both read the same row, one new secret would have vanished without ever signing.
    later, earlier = sorted((first, second), key=lambda t: t.previous_webhook_secret == OLD)
    assert earlier.previous_webhook_secret == OLD
    assert later.previous_webhook_secret == earlier.webhook_secret
    assert await stored(db) == later


async def test_an_endpoints_rotated_secret_survives_the_round_trip(
    db: SqlUnitOfWorkFactory,
) -> None:
    t0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    own, newer = new_webhook_secret(), new_webhook_secret()
    r = Recipient.register(
        TENANT, "u1", Profile(webhook=WebhookEndpoint("https://h.example.com/", own)), None, t0
    )
    r.update_profile(Profile(webhook=WebhookEndpoint("https://h.example.com/", newer)), t0)
    async with db() as u:
        await u.recipients.save(r)
        await u.commit()
    async with db() as u:
        got = await u.recipients.get(TENANT, "u1")
    assert got is not None
    assert got.webhook == WebhookEndpoint(
        "https://h.example.com/",
        newer,
        previous_secret=own,
        previous_secret_expires_at=t0 + timedelta(hours=24),
    )


# -- signing with the stored secrets ----------------------------------------------------------


@pytest.fixture
async def sink_url() -> AsyncIterator[tuple[SandboxWebhookSink, str]]:
    sink = SandboxWebhookSink()
    peer = await serve_asgi(sink)
    yield sink, f"{peer.base_url}/hook"
    await peer.close()


def to(url: str) -> Notification:
    return Notification.accept(
        NewNotification(
            request_id="r-1",
            user_id="u1",
            channel=Channel.WEBHOOK,
            priority=Priority.MEDIUM,
            category="test",
            content=Content("t", "b"),
            address=Address("webhook_url", url),
        ),
        id="ntf-1",
        tenant_id=TENANT,
        caller="tests",
        fingerprint="fp",
        now=datetime.now(UTC),
    )


async def deliver(db: SqlUnitOfWorkFactory, url: str) -> None:
    async with WebhookHttp() as http:
        sender = WebhookSender(http, TenantWebhookSecrets(db), SsrfGuard(allow_private=True))
        await sender.send(to(url))


@pytest.mark.parametrize(
    ("rotated_ago", "old_verifies"),
    [(timedelta(0), True), (25 * HOUR, False)],
    ids=["during the overlap", "after the overlap"],
)
async def test_both_secrets_verify_during_the_overlap_and_only_the_new_one_after(
    db: SqlUnitOfWorkFactory,
    sink_url: tuple[SandboxWebhookSink, str],
    rotated_ago: timedelta,
    old_verifies: bool,
) -> None:
    sink, url = sink_url
    clock = ClockAt(datetime.now(UTC) - rotated_ago)
    new = (await RotateWebhookSecret(db, clock, 24 * HOUR).execute(TENANT)).webhook_secret

    await deliver(db, url)

    [hook] = sink.received
    assert len(hook.headers["webhook-signature"].split(" ")) == (2 if old_verifies else 1)
    assert Webhook(new).verify(hook.body, hook.headers)
    if old_verifies:
        assert Webhook(OLD).verify(hook.body, hook.headers)
    else:
        with pytest.raises(Exception, match=r"(?i)signature"):
            Webhook(OLD).verify(hook.body, hook.headers)
