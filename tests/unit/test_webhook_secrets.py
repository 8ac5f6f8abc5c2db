"""Which secrets sign a webhook: the recipient endpoint's own, else the tenant's; and during a
rotation's overlap the replaced one too."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from application.errors import Unavailable
from application.ports.repositories import Tenant
from domain.errors import NotFound
from domain.notification import Address, Channel, Content, NewNotification, Notification, Priority
from domain.recipient import Profile, Recipient, WebhookEndpoint
from infrastructure.persistence.tenant_secrets import TenantWebhookSecrets
from tests.unit.application.fakes import FakeMonotonic, FakeUnitOfWork, FakeUnitOfWorkFactory

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
    assert await TenantWebhookSecrets(uow).secrets_for(webhook_to(HOOK), NOW) == [OWN_SECRET]


async def test_the_tenant_secret_signs_everything_else(uow: FakeUnitOfWorkFactory) -> None:
    with_endpoint(uow, WebhookEndpoint(HOOK, OWN_SECRET))
    secrets = TenantWebhookSecrets(uow)
    # Another URL for the same user: its owner never got the endpoint's key.
    assert await secrets.secrets_for(webhook_to("https://other.example.com/"), NOW) == [
        TENANT_SECRET
    ]
    # Another user, with no endpoint.
    assert await secrets.secrets_for(webhook_to(HOOK, user_id="u2"), NOW) == [TENANT_SECRET]


async def test_an_endpoint_without_its_own_secret_uses_the_tenants(
    uow: FakeUnitOfWorkFactory,
) -> None:
    with_endpoint(uow, WebhookEndpoint(HOOK))
    assert await TenantWebhookSecrets(uow).secrets_for(webhook_to(HOOK), NOW) == [TENANT_SECRET]


async def test_secrets_are_cached_briefly(uow: FakeUnitOfWorkFactory) -> None:
    clock = FakeMonotonic()
    secrets = TenantWebhookSecrets(uow, ttl_seconds=60, monotonic=clock)
    with_endpoint(uow, WebhookEndpoint(HOOK, OWN_SECRET))
    assert await secrets.secrets_for(webhook_to(HOOK), NOW) == [OWN_SECRET]
    opened = uow.opened

    with_endpoint(uow, WebhookEndpoint(HOOK))  # the secret was removed
    assert await secrets.secrets_for(webhook_to(HOOK), NOW) == [OWN_SECRET]
    assert uow.opened == opened, "served from the cache"

    clock.value += 61
    assert await secrets.secrets_for(webhook_to(HOOK), NOW) == [TENANT_SECRET]


async def test_an_unknown_tenant_is_not_found(uow: FakeUnitOfWorkFactory) -> None:
    uow.db.tenants.clear()
    with pytest.raises(NotFound):
        await TenantWebhookSecrets(uow).secrets_for(webhook_to(HOOK), NOW)


# -- rotation ---------------------------------------------------------------------------------

HOUR = timedelta(hours=1)
OLD_TENANT_SECRET = "whsec_b2xkLXRlbmFudC1zZWNyZXQtb2xkLXRlbmFudC1z"
OLD_OWN_SECRET = "whsec_b2xkLW93bi1zZWNyZXQtb2xkLW93bi1zZWNyZXQt"


def rotate_tenant(uow: FakeUnitOfWorkFactory, until: datetime) -> None:
    uow.db.tenants["tenant-a"] = Tenant(
        "tenant-a",
        TENANT_SECRET,
        previous_webhook_secret=OLD_TENANT_SECRET,
        previous_secret_expires_at=until,
    )


async def test_a_rotated_tenant_secret_signs_beside_the_new_one_until_it_expires(
    uow: FakeUnitOfWorkFactory,
) -> None:
    rotate_tenant(uow, NOW + HOUR)
    secrets = TenantWebhookSecrets(uow)
    n = webhook_to("https://other.example.com/")
    assert await secrets.secrets_for(n, NOW) == [TENANT_SECRET, OLD_TENANT_SECRET]
    # Decided at each send, not when the record was cached.
    assert await secrets.secrets_for(n, NOW + HOUR) == [TENANT_SECRET]


async def test_a_rotated_endpoint_secret_signs_beside_the_new_one_until_it_expires(
    uow: FakeUnitOfWorkFactory,
) -> None:
    with_endpoint(uow, WebhookEndpoint(HOOK, OLD_OWN_SECRET))
    r = uow.db.recipients[("tenant-a", "u1")]
    r.update_profile(Profile(webhook=WebhookEndpoint(HOOK, OWN_SECRET)), NOW, secret_overlap=HOUR)
    secrets = TenantWebhookSecrets(uow)
    assert await secrets.secrets_for(webhook_to(HOOK), NOW) == [OWN_SECRET, OLD_OWN_SECRET]
    assert await secrets.secrets_for(webhook_to(HOOK), NOW + HOUR) == [OWN_SECRET]


async def test_an_endpoint_moving_to_its_own_secret_keeps_the_tenants_signing(
    uow: FakeUnitOfWorkFactory,
) -> None:
    rotate_tenant(uow, NOW + 2 * HOUR)
    with_endpoint(uow, WebhookEndpoint(HOOK))
    r = uow.db.recipients[("tenant-a", "u1")]
    r.update_profile(Profile(webhook=WebhookEndpoint(HOOK, OWN_SECRET)), NOW, secret_overlap=HOUR)
    secrets = TenantWebhookSecrets(uow)
    # The receiver verified with the tenant's secrets until now: both still sign.
    assert await secrets.secrets_for(webhook_to(HOOK), NOW) == [
        OWN_SECRET,
        TENANT_SECRET,
        OLD_TENANT_SECRET,
    ]
    assert await secrets.secrets_for(webhook_to(HOOK), NOW + HOUR) == [OWN_SECRET]


async def test_an_endpoint_going_back_to_the_tenants_secret_keeps_its_own_signing(
    uow: FakeUnitOfWorkFactory,
) -> None:
    with_endpoint(uow, WebhookEndpoint(HOOK, OWN_SECRET))
    r = uow.db.recipients[("tenant-a", "u1")]
    r.update_profile(Profile(webhook=WebhookEndpoint(HOOK)), NOW, secret_overlap=HOUR)
    secrets = TenantWebhookSecrets(uow)
    assert await secrets.secrets_for(webhook_to(HOOK), NOW) == [TENANT_SECRET, OWN_SECRET]
    assert await secrets.secrets_for(webhook_to(HOOK), NOW + HOUR) == [TENANT_SECRET]


async def test_concurrent_misses_share_one_lookup(uow: FakeUnitOfWorkFactory) -> None:
    """A worker's claimed batch sends together: their endpoint lookups become one query per
    tenant, and each send still gets its own recipient's answer."""
    with_endpoint(uow, WebhookEndpoint(HOOK, OWN_SECRET))
    secrets = TenantWebhookSecrets(uow)
    opened = uow.opened
    answers = await asyncio.gather(
        secrets.secrets_for(webhook_to(HOOK), NOW),
        *(secrets.secrets_for(webhook_to(HOOK, user_id=f"other-{i}"), NOW) for i in range(20)),
    )
    assert answers[0] == [OWN_SECRET]
    assert answers[1:] == [[TENANT_SECRET]] * 20
    # One unit of work for the endpoints, one for the tenant record.
    assert uow.opened - opened == 2


async def test_a_failed_batched_lookup_fails_each_waiting_send(
    uow: FakeUnitOfWorkFactory,
) -> None:
    down = True

    def factory() -> FakeUnitOfWork:
        if down:
            raise Unavailable("postgres", "down")
        return uow()

    secrets = TenantWebhookSecrets(factory)
    results = await asyncio.gather(
        *(secrets.secrets_for(webhook_to(HOOK, user_id=f"u{i}"), NOW) for i in range(3)),
        return_exceptions=True,
    )
    assert all(isinstance(r, Unavailable) for r in results)
    # Nothing was cached: the next try looks again and succeeds.
    down = False
    assert await secrets.secrets_for(webhook_to(HOOK, user_id="u0"), NOW) == [TENANT_SECRET]
