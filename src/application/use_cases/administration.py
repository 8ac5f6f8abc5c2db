"""Operator verbs behind the CLI: API keys (and their tenants), webhook secrets, templates."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, replace
from datetime import timedelta

from application.errors import AlreadyExists
from application.ports.clock import Clock, IdGenerator
from application.ports.repositories import ApiKeyRecord, Tenant, UnitOfWorkFactory
from application.principal import Principal
from application.use_cases.authenticate import hash_api_key
from application.use_cases.templates import (
    CreateTemplate,
    TemplateDraft,
    TemplateWithVersion,
    UpdateTemplate,
)
from domain.errors import NotFound, ValidationFailed
from domain.names import check_name


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
        check_name("tenant", tenant_id)
        check_name("service", service)
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


class RotateWebhookSecret:
    """A new signing secret for a tenant's webhooks. The old one keeps signing, as a second
    signature, for the overlap, so receivers can switch to the new one at their own pace."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, overlap: timedelta) -> None:
        self._uow = uow
        self._clock = clock
        self._overlap = overlap

    async def execute(self, tenant_id: str, overlap: timedelta | None = None) -> Tenant:
        """``overlap`` None: the configured one. Zero stops the old secret at once (a leak)."""
        check_name("tenant", tenant_id)
        overlap = self._overlap if overlap is None else overlap
        if overlap < timedelta(0):
            raise ValidationFailed.single("overlap", "must not be negative")
        now = self._clock.now()
        async with self._uow() as uow:
            tenant = await uow.tenants.get(tenant_id, for_update=True)
            if tenant is None:
                raise NotFound("tenant", tenant_id)
            rotated = tenant.with_rotated_secret(new_webhook_secret(), now, overlap)
            await uow.tenants.save_secrets(rotated)
            await uow.commit()
        return rotated


class PutTemplate:
    """The operator's verb (CLI, dev seed): store a template's next version and activate it,
    creating the template if it is new."""

    def __init__(self, create: CreateTemplate, update: UpdateTemplate) -> None:
        self._create = create
        self._update = update

    async def execute(
        self, tenant_id: str, service: str, draft: TemplateDraft
    ) -> TemplateWithVersion:
        check_name("tenant", tenant_id)
        principal = Principal(tenant_id, service)
        draft = replace(draft, activate=True)
        try:
            return await self._create.execute(principal, draft)
        except AlreadyExists:
            # Empty fields keep what the template has, as UpdateTemplate does.
            return await self._update.execute(
                principal,
                replace(
                    draft,
                    description=draft.description or None,
                    default_locale=draft.default_locale or None,
                ),
            )
