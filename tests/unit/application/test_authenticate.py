"""AuthenticateApiKey: key -> Principal, with a short positive and negative cache."""

from __future__ import annotations

import dataclasses

import pytest

from application.errors import Unauthenticated
from application.ports.repositories import ApiKeyRecord
from application.principal import Principal
from application.use_cases.authenticate import AuthenticateApiKey, hash_api_key
from tests.unit.application.fakes import FakeMonotonic, FakeUnitOfWorkFactory

GOOD = "nfy_good-key-0123456789"
REVOKED = "nfy_revoked-key-0123456789"


@pytest.fixture
def uow() -> FakeUnitOfWorkFactory:
    factory = FakeUnitOfWorkFactory()
    factory.db.api_keys[hash_api_key(GOOD)] = ApiKeyRecord("key-1", "tenant-a", "orders", False)
    factory.db.api_keys[hash_api_key(REVOKED)] = ApiKeyRecord("key-2", "tenant-a", "old", True)
    return factory


@pytest.fixture
def clock() -> FakeMonotonic:
    return FakeMonotonic()


def auth(uow: FakeUnitOfWorkFactory, clock: FakeMonotonic, **kw: int) -> AuthenticateApiKey:
    return AuthenticateApiKey(uow, ttl_seconds=30, monotonic=clock, **kw)


async def test_a_valid_key_gives_its_principal(
    uow: FakeUnitOfWorkFactory, clock: FakeMonotonic
) -> None:
    assert await auth(uow, clock).execute(GOOD) == Principal("tenant-a", "orders", "key-1")


@pytest.mark.parametrize("key", ["nfy_unknown-0123456789", REVOKED])
async def test_unknown_and_revoked_keys_are_refused(
    uow: FakeUnitOfWorkFactory, clock: FakeMonotonic, key: str
) -> None:
    with pytest.raises(Unauthenticated, match="invalid or revoked"):
        await auth(uow, clock).execute(key)


async def test_a_missing_key_is_refused_without_a_lookup(
    uow: FakeUnitOfWorkFactory, clock: FakeMonotonic
) -> None:
    with pytest.raises(Unauthenticated, match="missing"):
        await auth(uow, clock).execute("")
    assert uow.db.api_key_lookups == 0


async def test_a_second_call_is_served_from_the_cache(
    uow: FakeUnitOfWorkFactory, clock: FakeMonotonic
) -> None:
    a = auth(uow, clock)
    first = await a.execute(GOOD)
    clock.value += 29
    assert await a.execute(GOOD) == first
    assert uow.db.api_key_lookups == 1
    assert uow.opened == 1


async def test_unknown_keys_are_cached_too(
    uow: FakeUnitOfWorkFactory, clock: FakeMonotonic
) -> None:
    a = auth(uow, clock)
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await a.execute("nfy_unknown-0123456789")
    assert uow.db.api_key_lookups == 1


async def test_the_cache_expires_so_revocation_takes_effect(
    uow: FakeUnitOfWorkFactory, clock: FakeMonotonic
) -> None:
    a = auth(uow, clock)
    await a.execute(GOOD)
    record = uow.db.api_keys[hash_api_key(GOOD)]
    uow.db.api_keys[hash_api_key(GOOD)] = dataclasses.replace(record, revoked=True)
    assert await a.execute(GOOD) == Principal("tenant-a", "orders", "key-1")  # still cached
    clock.value += 30
    with pytest.raises(Unauthenticated):
        await a.execute(GOOD)
    assert uow.db.api_key_lookups == 2


async def test_a_full_cache_is_cleared_not_grown(
    uow: FakeUnitOfWorkFactory, clock: FakeMonotonic
) -> None:
    a = auth(uow, clock, max_entries=2)
    await a.execute(GOOD)
    for key in ("nfy_unknown-aaaaaaaaaa", "nfy_unknown-bbbbbbbbbb"):
        with pytest.raises(Unauthenticated):
            await a.execute(key)
    # The third entry cleared the cache, so GOOD is looked up again.
    await a.execute(GOOD)
    assert uow.db.api_key_lookups == 4
