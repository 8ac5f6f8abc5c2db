"""The ``RateLimiter`` port on Redis: a request rate per provider shared by every worker, by the
generic cell rate algorithm (GCRA), one Lua script per ``acquire``.

Per limited provider one key, ``<ns>:rate:<provider>``, holds the theoretical arrival time
(TAT, microseconds since the epoch): when the provider would be idle again had every granted
request been spaced exactly ``1/rate`` apart. A request at ``now`` is granted when
``max(TAT, now) + 1/rate - burst_slots/rate <= now`` and then moves TAT on by ``1/rate``;
otherwise the answer is how long until that holds, and nothing changes.

Burst: an idle provider takes up to ``burst_slots = max(1, rate * burst)`` requests at once
(``burst`` defaults to one second, so a second's worth), then one every ``1/rate``. Over any
span ``T`` at most ``burst_slots + rate * T`` requests are granted. Keep ``burst`` at or under a
second: providers count their quotas per second, and a larger burst would spend the next
second's quota in this one.

Providers without a configured rate always get zero and never touch Redis. Times come from the
caller's ``now``. The key expires shortly after TAT passes, when it would read as idle anyway.
Redis unreachable: ``Unavailable("redis")`` (``FailoverSender`` then sends unthrottled).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Final

from redis.asyncio import Redis

from infrastructure.redis_calls import since_epoch, unavailable_if_unreachable

_US: Final = timedelta(microseconds=1)
# Kept past TAT, in ms, so a worker whose clock runs a little behind still finds the key.
_EXPIRY_MARGIN_MS: Final = 60_000

# KEYS: the provider's TAT. ARGV: now, interval, burst_slots * interval (us), margin (ms).
# Returns 0 when a slot was taken, else the wait in whole microseconds (rounded up).
_ACQUIRE: Final = """
local now = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if tat < now then
  tat = now
end
local new_tat = tat + tonumber(ARGV[2])
local allow_at = new_tat - tonumber(ARGV[3])
if allow_at > now then
  return math.ceil(allow_at - now)
end
local ttl = math.ceil((new_tat - now) / 1000) + tonumber(ARGV[4])
redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX', string.format('%d', ttl))
return 0
"""


class RedisRateLimiter:
    """Shared per-provider request rates, see the module docstring."""

    def __init__(
        self,
        client: Redis,
        rates: Mapping[str, float],
        *,
        namespace: str = "notifyd",
        burst: timedelta = timedelta(seconds=1),
    ) -> None:
        """``rates``: requests per second by provider name; unlisted providers are unlimited."""
        if not namespace:
            raise ValueError("namespace must be non-empty")
        if burst <= timedelta(0):
            raise ValueError(f"burst must be positive, got {burst!r}")
        bad = {name: rate for name, rate in rates.items() if not rate > 0}
        if bad:
            raise ValueError(f"rates must be positive requests per second, got {bad}")
        self._client = client
        self._namespace = namespace
        # provider -> (interval, burst_slots * interval), in microseconds.
        self._limits: dict[str, tuple[float, float]] = {}
        for name, rate in rates.items():
            interval = 1_000_000 / rate
            # The epsilon keeps 10/s * 1 s at 10 slots despite float rounding.
            slots = max(1, int(rate * burst.total_seconds() + 1e-9))
            self._limits[name] = (interval, slots * interval)
        self._acquire = client.register_script(_ACQUIRE)

    def key(self, provider: str) -> str:
        return f"{self._namespace}:rate:{provider}"

    def burst_slots(self, provider: str) -> int | None:
        """How many requests an idle provider takes at once (None: unlimited)."""
        limit = self._limits.get(provider)
        return None if limit is None else round(limit[1] / limit[0])

    async def acquire(self, provider: str, now: datetime) -> timedelta:
        limit = self._limits.get(provider)
        if limit is None:
            return timedelta(0)
        interval, tolerance = limit
        with unavailable_if_unreachable():
            wait_us = await self._acquire(
                keys=[self.key(provider)],
                args=[since_epoch(now, _US), repr(interval), repr(tolerance), _EXPIRY_MARGIN_MS],
            )
        return int(wait_us) * _US
