"""Webhook signing secrets, read from Postgres and cached briefly: a recipient endpoint's own
secrets for a notification sent to that endpoint, the tenant's for every other one. During a
rotation's overlap the replaced secret signs too."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime

from application.group_commit import GroupCommit
from application.ports.repositories import Tenant, UnitOfWorkFactory
from application.ttl_cache import TtlCache
from domain.errors import NotFound
from domain.notification import Notification
from domain.recipient import WebhookEndpoint

# Recipients are many, tenants few: the endpoint cache is bounded so a worker that serves
# millions of users does not keep an entry for each.
MAX_CACHED_ENDPOINTS = 10_000
MAX_CACHED_TENANTS = 10_000
# Endpoint lookups that miss the cache together are answered by one query per tenant, of at
# most this many recipients.
MAX_LOOKUPS_PER_QUERY = 500


class TenantWebhookSecrets:
    """A rotation reaches a worker within ``ttl_seconds``; until then the worker signs with the
    old secret alone, which receivers still accept during the overlap."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        ttl_seconds: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._uow = uow
        # Whole records are cached, not secret lists: when the previous secret stops signing
        # is decided at each send, not when the entry was loaded.
        self._tenants: TtlCache[str, Tenant] = TtlCache(ttl_seconds, MAX_CACHED_TENANTS, monotonic)
        # Absence is cached too: most webhooks go to tenants' own URLs, not recipients'.
        self._endpoints: TtlCache[tuple[str, str], WebhookEndpoint | None] = TtlCache(
            ttl_seconds, MAX_CACHED_ENDPOINTS, monotonic
        )
        # Misses made together are looked up together, one query per tenant. A worker begins
        # a whole claimed batch at once, so its sends miss together (each recipient is new to
        # the cache) and a query each would cost more than the rest of the send.
        self._lookups: GroupCommit[str, str, WebhookEndpoint | None] = GroupCommit(
            self._look_up, max_batch=MAX_LOOKUPS_PER_QUERY, max_in_flight=4
        )

    async def secrets_for(self, notification: Notification, now: datetime) -> list[str]:
        address = notification.address
        if address is not None and address.kind == "webhook_url" and address.value:
            endpoint = await self._endpoint(notification.tenant_id, notification.user_id)
            # Only the recipient's own URL gets its secrets: a notification addressed
            # explicitly elsewhere must not be signed with a key that URL's owner never had.
            if endpoint is not None and endpoint.url == address.value:
                return await self._endpoint_secrets(notification.tenant_id, endpoint, now)
        return (await self.tenant(notification.tenant_id)).signing_secrets(now)

    async def tenant(self, tenant_id: str) -> Tenant:
        return await self._tenants.get_or_load(tenant_id, lambda: self._load_tenant(tenant_id))

    async def _endpoint_secrets(
        self, tenant_id: str, endpoint: WebhookEndpoint, now: datetime
    ) -> list[str]:
        found: list[str] = []
        # '' stands for the tenant's secrets, current one first.
        for signer in (endpoint.secret, endpoint.previous_signer(now)):
            if signer is None:
                continue
            secrets = [signer] if signer else (await self.tenant(tenant_id)).signing_secrets(now)
            found += [s for s in secrets if s not in found]
        return found

    async def _load_tenant(self, tenant_id: str) -> Tenant:
        async with self._uow() as uow:
            tenant = await uow.tenants.get(tenant_id)
        if tenant is None:
            raise NotFound("tenant", tenant_id)
        return tenant

    async def _endpoint(self, tenant_id: str, user_id: str) -> WebhookEndpoint | None:
        return await self._endpoints.get_or_load(
            (tenant_id, user_id), lambda: self._load_endpoint(tenant_id, user_id)
        )

    async def _load_endpoint(self, tenant_id: str, user_id: str) -> WebhookEndpoint | None:
        return await self._lookups.submit(tenant_id, user_id)

    async def _look_up(
        self, tenant_id: str, user_ids: Sequence[str]
    ) -> list[WebhookEndpoint | None]:
        async with self._uow() as uow:
            found = await uow.recipients.get_many(tenant_id, user_ids)
        return [
            r.webhook if (r := found.get(user_id)) is not None else None for user_id in user_ids
        ]
