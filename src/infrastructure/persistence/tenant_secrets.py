"""Webhook signing secrets, read from Postgres and cached briefly: a recipient endpoint's own
secrets for a notification sent to that endpoint, the tenant's for every other one. During a
rotation's overlap the replaced secret signs too."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime

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
        # Misses waiting for the next batched lookup: tenant -> user -> its answer. A worker
        # begins a whole claimed batch at once, so its sends miss together (each recipient is
        # new to the cache) and a query each would cost more than the rest of the send.
        self._waiting: dict[str, dict[str, asyncio.Future[WebhookEndpoint | None]]] = {}
        self._lookup: asyncio.Task[None] | None = None
        self._lookups: set[asyncio.Task[None]] = set()

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
        waiting = self._waiting.setdefault(tenant_id, {})
        answer = waiting.get(user_id)
        if answer is None:
            answer = waiting[user_id] = asyncio.get_running_loop().create_future()
            if self._lookup is None:
                # Runs once every send woken with this one has reached its own lookup.
                self._lookup = asyncio.create_task(self._look_up_waiting())
                # Held until done: the loop keeps only a weak reference to a task.
                self._lookups.add(self._lookup)
                self._lookup.add_done_callback(self._lookups.discard)
        # Shielded: several sends may wait on one answer, and one of them being cancelled
        # must not cancel it for the others.
        return await asyncio.shield(answer)

    async def _look_up_waiting(self) -> None:
        batch: dict[str, dict[str, asyncio.Future[WebhookEndpoint | None]]] = {}
        try:
            await asyncio.sleep(0)
            self._lookup = None
            batch, self._waiting = self._waiting, {}
            async with self._uow() as uow:
                for tenant_id, waiting in batch.items():
                    users = list(waiting)
                    for start in range(0, len(users), MAX_LOOKUPS_PER_QUERY):
                        chunk = users[start : start + MAX_LOOKUPS_PER_QUERY]
                        found = await uow.recipients.get_many(tenant_id, chunk)
                        for user_id in chunk:
                            recipient = found.get(user_id)
                            _answer(waiting[user_id], recipient.webhook if recipient else None)
        except BaseException as error:
            if self._lookup is asyncio.current_task():
                # Cut off before taking its batch: the waiting ones must not wait forever.
                self._lookup = None
                batch, self._waiting = self._waiting, {}
            for waiting in batch.values():
                for answer in waiting.values():
                    _fail(answer, error)
            if not isinstance(error, Exception):
                raise


def _answer(
    answer: asyncio.Future[WebhookEndpoint | None], endpoint: WebhookEndpoint | None
) -> None:
    if not answer.done():
        answer.set_result(endpoint)


def _fail(answer: asyncio.Future[WebhookEndpoint | None], error: BaseException) -> None:
    if answer.done():
        return
    if isinstance(error, asyncio.CancelledError):
        answer.cancel()
        return
    answer.set_exception(error)
    # Every waiter may have gone (cancelled): no "exception never retrieved" warning then.
    answer.exception()
