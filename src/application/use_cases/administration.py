"""Operator verbs behind the CLI: API keys (and their tenants) and templates."""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass

from application.ports.clock import Clock, IdGenerator
from application.ports.repositories import (
    ApiKeyRecord,
    TemplateVersion,
    Tenant,
    UnitOfWorkFactory,
)
from application.ports.templates import TemplateRenderer
from application.use_cases.authenticate import hash_api_key
from domain.errors import ValidationFailed

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _check_name(field: str, value: str) -> None:
    if not _NAME.match(value):
        raise ValidationFailed.single(
            field,
            "1-64 characters: letters, digits, '_', '.', '-' (starting with a letter or digit)",
        )


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True, slots=True)
class IssuedKey:
    key: str
    key_id: str
    tenant_id: str
    service: str
    webhook_secret: str


class CreateApiKey:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, ids: IdGenerator) -> None:
        self._uow = uow
        self._clock = clock
        self._ids = ids

    async def execute(self, tenant_id: str, service: str, key: str | None = None) -> IssuedKey:
        """Issue a key (``key`` given: register that exact key, as dev mode does)."""
        _check_name("tenant", tenant_id)
        _check_name("service", service)
        key = key or "nfy_" + secrets.token_urlsafe(32)
        if len(key) < 16:
            raise ValidationFailed.single("key", "an API key must be at least 16 characters")
        now = self._clock.now()
        async with self._uow() as uow:
            tenant = await uow.tenants.get(tenant_id)
            if tenant is None:
                tenant = Tenant(tenant_id, new_webhook_secret())
                await uow.tenants.add(tenant, now)
            existing = await uow.api_keys.find_by_hash(hash_api_key(key))
            if existing is not None:
                if (existing.tenant_id, existing.service) != (tenant_id, service):
                    raise ValidationFailed.single("key", "already registered to another caller")
                return IssuedKey(key, existing.key_id, tenant_id, service, tenant.webhook_secret)
            record = ApiKeyRecord(self._ids.new_id(), tenant_id, service, revoked=False)
            await uow.api_keys.add(record, hash_api_key(key), now)
            await uow.commit()
        return IssuedKey(key, record.key_id, tenant_id, service, tenant.webhook_secret)


class PutTemplate:
    def __init__(self, uow: UnitOfWorkFactory, renderer: TemplateRenderer, clock: Clock) -> None:
        self._uow = uow
        self._renderer = renderer
        self._clock = clock

    async def execute(
        self, tenant_id: str, name: str, title: str, body: str, locale: str = ""
    ) -> TemplateVersion:
        _check_name("name", name)
        self._renderer.check_source(title, body)
        async with self._uow() as uow:
            stored = await uow.templates.put(
                TemplateVersion(tenant_id, name, 0, locale, title, body), self._clock.now()
            )
            await uow.commit()
        return stored
