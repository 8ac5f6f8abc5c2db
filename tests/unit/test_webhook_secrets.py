"""Which secret signs a webhook: the recipient endpoint's own, else the tenant's."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from application.ports.repositories import Tenant
from domain.errors import NotFound
from domain.notification import Address, Channel, Content, NewNotification, Notification, Priority
from domain.recipient import Profile, Recipient, WebhookEndpoint
from infrastructure.persistence.tenant_secrets import TenantWebhookSecrets
from tests.unit.application.fakes import FakeMonotonic, FakeUnitOfWorkFactory

NOW = datetime(2025, 1, 1, tzinfo=UTC)
TENANT_SECRET = "whsec_dGVuYW50LXNlY3JldC10ZW5hbnQtc2VjcmV0"
OWN_SECRET = "whsec_b3duLXNlY3JldC1vd24tc2VjcmV0LW93bi1z"
HOOK = "https://hooks.example.com/u1"


def webhook_to(url: str, user_id: str = "u1") -> Notification:
    return Notification.accept(
        NewNotification(
            request_id=f"r-{url}",
            user_id=user_id,
            channel=Channel.WEBHOOK,
            priority=Priority.MEDIUM,
            category="test",
            content=Content("t", "b"),
            address=Address("webhook_url", url),
        ),
        id="n-1",
        tenant_id="tenant-a",
        caller="tests",
        fingerprint="fp",
        now=NOW,
    )


@pytest.fixture
def uow() -> FakeUnitOfWorkFactory:
    factory = FakeUnitOfWorkFactory()
    factory.db.tenants["tenant-a"] = Tenant("tenant-a", TENANT_SECRET)
    return factory


def with_endpoint(uow: FakeUnitOfWorkFactory, endpoint: WebhookEndpoint) -> None:
    r = Recipient.register("tenant-a", "u1", Profile(webhook=endpoint), None, NOW)
    r.version = 1
    uow.db.recipients[("tenant-a", "u1")] = r


async def test_the_endpoints_own_secret_signs_what_goes_to_it(uow: FakeUnitOfWorkFactory) -> None:
    with_endpoint(uow, WebhookEndpoint(HOOK, OWN_SECRET))
    assert await TenantWebhookSecrets(uow).secret_for(webhook_to(HOOK)) == OWN_SECRET


async def test_the_tenant_secret_signs_everything_else(uow: FakeUnitOfWorkFactory) -> None:
    with_endpoint(uow, WebhookEndpoint(HOOK, OWN_SECRET))
    secrets = TenantWebhookSecrets(uow)
    # Another URL for the same user: its owner never got the endpoint's key.
    assert await secrets.secret_for(webhook_to("https://other.example.com/")) == TENANT_SECRET
    # Another user, with no endpoint.
    assert await secrets.secret_for(webhook_to(HOOK, user_id="u2")) == TENANT_SECRET


async def test_an_endpoint_without_its_own_secret_uses_the_tenants(
    uow: FakeUnitOfWorkFactory,
) -> None:
    with_endpoint(uow, WebhookEndpoint(HOOK))
    assert await TenantWebhookSecrets(uow).secret_for(webhook_to(HOOK)) == TENANT_SECRET


async def test_secrets_are_cached_briefly(uow: FakeUnitOfWorkFactory) -> None:
    clock = FakeMonotonic()
    secrets = TenantWebhookSecrets(uow, ttl_seconds=60, monotonic=clock)
    with_endpoint(uow, WebhookEndpoint(HOOK, OWN_SECRET))
    assert await secrets.secret_for(webhook_to(HOOK)) == OWN_SECRET
    opened = uow.opened

    with_endpoint(uow, WebhookEndpoint(HOOK))  # the secret was removed
    assert await secrets.secret_for(webhook_to(HOOK)) == OWN_SECRET
    assert uow.opened == opened, "served from the cache"

    clock.value += 61
    assert await secrets.secret_for(webhook_to(HOOK)) == TENANT_SECRET


async def test_an_unknown_tenant_is_not_found(uow: FakeUnitOfWorkFactory) -> None:
    uow.db.tenants.clear()
    with pytest.raises(NotFound):
        await TenantWebhookSecrets(uow).secret_for(webhook_to(HOOK))
