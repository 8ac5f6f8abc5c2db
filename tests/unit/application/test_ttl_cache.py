"""TtlCache: fresh entries are served, stale ones reloaded, the least recently used evicted."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from application.ttl_cache import TtlCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Loader:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, key: str) -> Callable[[], Awaitable[str | None]]:
        async def load() -> str | None:
            self.calls.append(key)
            return None if key.startswith("none") else key.upper()

        return load


async def test_a_fresh_entry_is_served_and_a_stale_one_reloaded() -> None:
    clock, load = Clock(), Loader()
    cache: TtlCache[str, str | None] = TtlCache(10, 100, clock)
    assert await cache.get_or_load("a", load("a")) == "A"
    clock.now += 9.9
    assert await cache.get_or_load("a", load("a")) == "A"
    clock.now += 0.1
    assert await cache.get_or_load("a", load("a")) == "A"
    assert load.calls == ["a", "a"]


async def test_none_is_cached_unless_keep_refuses_it() -> None:
    load = Loader()
    cache: TtlCache[str, str | None] = TtlCache(10, 100, Clock())
    for _ in range(2):
        await cache.get_or_load("none-1", load("none-1"))
        await cache.get_or_load("none-2", load("none-2"), keep=lambda v: v is not None)
    assert load.calls == ["none-1", "none-2", "none-2"]


async def test_the_least_recently_used_entry_goes_beyond_the_bound() -> None:
    load = Loader()
    cache: TtlCache[str, str | None] = TtlCache(10, 2, Clock())
    for key in ("a", "b", "a", "c", "a", "b"):
        await cache.get_or_load(key, load(key))
    # "b" was least recently used when "c" arrived, so it was loaded again.
    assert load.calls == ["a", "b", "c", "b"]


async def test_a_failed_load_is_not_cached_and_ttl_zero_caches_nothing() -> None:
    calls = 0

    async def failing() -> str:
        nonlocal calls
        calls += 1
        raise LookupError("gone")

    cache: TtlCache[str, str] = TtlCache(10, 10, Clock())
    for _ in range(2):
        with pytest.raises(LookupError):
            await cache.get_or_load("k", failing)
    assert calls == 2
    load = Loader()
    off: TtlCache[str, str | None] = TtlCache(0, 10, Clock())
    for _ in range(2):
        await off.get_or_load("a", load("a"))
    assert load.calls == ["a", "a"]
