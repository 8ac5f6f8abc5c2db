"""Webhook signing secrets per tenant, read from Postgres and cached briefly."""

from __future__ import annotations

import time

from application.ports.repositories import UnitOfWorkFactory
from domain.errors import NotFound


class TenantWebhookSecrets:
    def __init__(self, uow: UnitOfWorkFactory, ttl_seconds: float = 60.0) -> None:
        self._uow = uow
        self._ttl = ttl_seconds
        self._cache: dict[str, tuple[float, str]] = {}

    async def secret_for(self, tenant_id: str) -> str:
        now = time.monotonic()
        cached = self._cache.get(tenant_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self._uow() as uow:
            tenant = await uow.tenants.get(tenant_id)
        if tenant is None:
            raise NotFound("tenant", tenant_id)
        self._cache[tenant_id] = (now + self._ttl, tenant.webhook_secret)
        return tenant.webhook_secret
