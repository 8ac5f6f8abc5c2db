"""Authenticate an API key to a Principal, with a short cache so auth costs no query per RPC."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from application.errors import Unauthenticated
from application.ports.repositories import UnitOfWorkFactory
from application.principal import Principal
from application.ttl_cache import TtlCache


def hash_api_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class AuthenticateApiKey:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        ttl_seconds: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
    ) -> None:
        self._uow = uow
        # Unknown keys are cached too, so a client retrying a bad key cannot hammer Postgres.
        self._cache: TtlCache[bytes, Principal | None] = TtlCache(
            ttl_seconds, max_entries, monotonic
        )

    async def execute(self, key: str) -> Principal:
        if not key:
            raise Unauthenticated("missing API key: send metadata 'authorization: Bearer <key>'")
        digest = hash_api_key(key)
        principal = await self._cache.get_or_load(digest, lambda: self._lookup(digest))
        if principal is None:
            raise Unauthenticated("invalid or revoked API key")
        return principal

    async def _lookup(self, digest: bytes) -> Principal | None:
        async with self._uow() as uow:
            record = await uow.api_keys.find_by_hash(digest)
        if record is None or record.revoked:
            return None
        return Principal(record.tenant_id, record.service, record.key_id)
