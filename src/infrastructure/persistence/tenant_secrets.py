"""Webhook signing secrets, read from Postgres and cached briefly: a recipient endpoint's own
secret for a notification sent to that endpoint, the tenant's for every other one."""

from __future__ import annotations

import time
from collections.abc import Callable

from application.ports.repositories import UnitOfWorkFactory
from application.ttl_cache import TtlCache
from domain.errors import NotFound
from domain.notification import Notification
from domain.recipient import WebhookEndpoint

# Recipients are many, tenants few: the endpoint cache is bounded so a worker that serves
# millions of users does not keep an entry for each.
MAX_CACHED_ENDPOINTS = 10_000
MAX_CACHED_TENANTS = 10_000


class TenantWebhookSecrets:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        ttl_seconds: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._uow = uow
        self._tenants: TtlCache[str, str] = TtlCache(ttl_seconds, MAX_CACHED_TENANTS, monotonic)
        # Absence is cached too: most webhooks go to tenants' own URLs, not recipients'.
        self._endpoints: TtlCache[tuple[str, str], WebhookEndpoint | None] = TtlCache(
            ttl_seconds, MAX_CACHED_ENDPOINTS, monotonic
        )

    async def secret_for(self, notification: Notification) -> str:
        address = notification.address
        if address is not None and address.kind == "webhook_url" and address.value:
            endpoint = await self._endpoint(notification.tenant_id, notification.user_id)
            # Only the recipient's own URL gets its secret: a notification addressed
            # explicitly elsewhere must not be signed with a key that URL's owner never had.
            if endpoint is not None and endpoint.secret and endpoint.url == address.value:
                return endpoint.secret
        return await self.tenant_secret(notification.tenant_id)

    async def tenant_secret(self, tenant_id: str) -> str:
        return await self._tenants.get_or_load(tenant_id, lambda: self._load_tenant(tenant_id))

    async def _load_tenant(self, tenant_id: str) -> str:
        async with self._uow() as uow:
            tenant = await uow.tenants.get(tenant_id)
        if tenant is None:
            raise NotFound("tenant", tenant_id)
        return tenant.webhook_secret

    async def _endpoint(self, tenant_id: str, user_id: str) -> WebhookEndpoint | None:
        return await self._endpoints.get_or_load(
            (tenant_id, user_id), lambda: self._load_endpoint(tenant_id, user_id)
        )

    async def _load_endpoint(self, tenant_id: str, user_id: str) -> WebhookEndpoint | None:
        async with self._uow() as uow:
            recipient = await uow.recipients.get(tenant_id, user_id)
        return recipient.webhook if recipient is not None else None
