"""A small in-process cache: each entry lives a fixed time; beyond a bound, the least recently
used entry goes. For lookups that would otherwise cost a query per request or delivery."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(
        self,
        ttl_seconds: float,
        max_entries: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        self._monotonic = monotonic
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    async def get_or_load(
        self,
        key: K,
        load: Callable[[], Awaitable[V]],
        keep: Callable[[V], bool] = lambda _: True,
    ) -> V:
        """The fresh cached value, or ``load()``'s, kept if ``keep`` says so. An exception
        from ``load`` is not cached."""
        now = self._monotonic()
        cached = self._entries.get(key)
        if cached is not None and cached[0] > now:
            self._entries.move_to_end(key)
            return cached[1]
        value = await load()
        if self._ttl > 0 and keep(value):
            self._entries[key] = (now + self._ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return value
