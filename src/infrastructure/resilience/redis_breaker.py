"""The ``CircuitBreaker`` port on Redis: one breaker per provider, shared by every worker, each
transition one Lua script so concurrent workers see one consistent state.

Keys per provider (``ns`` = namespace; the ``{ns:breaker:<provider>}`` hash tag keeps a
provider's two keys on one Cluster slot, which a two-key script requires):

- ``{ns:breaker:<p>}:state``     hash: ``state`` (absent = CLOSED, OPEN, HALF_OPEN), ``opened_at``
  and ``probe_until`` (ms), ``seq`` (member counter for the failures set)
- ``{ns:breaker:<p>}:failures``  sorted set of failure times (ms) in the window, CLOSED only

States:

- CLOSED: every call allowed. Failures are counted in a sliding window; the
  ``failure_threshold``-th within ``window`` opens it. Successes do not reset the count: the
  rule is "N failures within the window", which interleaved successes from other workers would
  otherwise hide.
- OPEN: nothing allowed until ``cooldown`` after ``opened_at``; then the first ``allow()`` turns
  it HALF_OPEN and is the probe. Outcomes reported while OPEN (requests started before it
  opened, or pinned sends that bypass it) change nothing: the cool-down runs from the opening,
  and the probe decides.
- HALF_OPEN: one probe is out, holding a lease until ``probe_until``; every other caller gets
  no. A success closes it (failures cleared), a failure reopens it from now. A probe whose
  worker died is released by its lease running out: the next ``allow()`` becomes the probe.

Times come from the caller's ``now``, never from Redis, so tests and workers share one clock.
Every write refreshes a TTL of a few windows and cool-downs, so an idle provider's keys go
away (an expired key reads as CLOSED, which is what an idle provider's breaker should be).

Redis unreachable: ``Unavailable("redis")``, as the scheduler does. Whether that blocks or
allows a send is the caller's policy (``FailoverSender`` fails open).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Final

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from application.ports.sender import BreakerState
from infrastructure.redis_calls import (
    MS,
    duration_ms,
    since_epoch,
    text,
    unavailable_if_unreachable,
)

log = logging.getLogger(__name__)


# KEYS: state, failures. ARGV: now, cooldown, probe lease, ttl (ms).
# Returns 0 (no), 1 (yes, closed) or 2 (yes, and the caller holds the probe).
_ALLOW: Final = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return 1
end
local now = tonumber(ARGV[1])
if state == 'OPEN' then
  if now < tonumber(redis.call('HGET', KEYS[1], 'opened_at')) + tonumber(ARGV[2]) then
    return 0
  end
elseif now < tonumber(redis.call('HGET', KEYS[1], 'probe_until')) then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'HALF_OPEN', 'probe_until', now + tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 2
"""

# KEYS: state, failures. ARGV: now, window, threshold, ttl (ms).
# Returns 1 when this failure opened the breaker, else 0.
_FAILURE: Final = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'OPEN' then
  return 0
end
local now = tonumber(ARGV[1])
if state == 'HALF_OPEN' then
  redis.call('HSET', KEYS[1], 'state', 'OPEN', 'opened_at', now)
  redis.call('HDEL', KEYS[1], 'probe_until')
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return 1
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('ZADD', KEYS[2], now, seq)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'state', 'OPEN', 'opened_at', now)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 0
"""

# KEYS: state, failures. Returns 1 when this success closed a half-open breaker, else 0.
_SUCCESS: Final = """
if redis.call('HGET', KEYS[1], 'state') == 'HALF_OPEN' then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
"""


class RedisCircuitBreaker:
    """Per-provider circuit breakers in Redis, see the module docstring."""

    def __init__(
        self,
        client: Redis,
        *,
        namespace: str = "notifyd",
        failure_threshold: int = 5,
        window: timedelta = timedelta(seconds=30),
        cooldown: timedelta = timedelta(seconds=30),
        probe_lease: timedelta | None = None,
    ) -> None:
        """``probe_lease`` (default: the cool-down) is how long a probe may stay out before
        another caller may probe; keep it above the provider timeout, or a slow probe's lease
        runs out while it is still waiting and a second probe goes out."""
        if not namespace or "{" in namespace or "}" in namespace:
            # Braces would change the hash tag and scatter a provider's keys over slots.
            raise ValueError(f"namespace must be non-empty and brace-free, got {namespace!r}")
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        self._client = client
        self._namespace = namespace
        self._threshold = failure_threshold
        self._window_ms = duration_ms(window, "window")
        self._cooldown_ms = duration_ms(cooldown, "cooldown")
        self._probe_ms = duration_ms(probe_lease or cooldown, "probe_lease")
        # Outlives any state that still matters: a window of failures, or an opening plus its
        # cool-down plus a probe.
        self._ttl_ms = 2 * (self._window_ms + self._cooldown_ms + self._probe_ms)
        self._allow = client.register_script(_ALLOW)
        self._failure = client.register_script(_FAILURE)
        self._success = client.register_script(_SUCCESS)

    @property
    def cooldown(self) -> timedelta:
        return self._cooldown_ms * MS

    def keys(self, provider: str) -> tuple[str, str]:
        """The state hash and the failures set of ``provider``."""
        if not provider or "{" in provider or "}" in provider:
            raise ValueError(f"provider name must be non-empty and brace-free, got {provider!r}")
        tag = f"{{{self._namespace}:breaker:{provider}}}"
        return f"{tag}:state", f"{tag}:failures"

    async def _run(self, script: AsyncScript, provider: str, *args: int) -> Any:
        with unavailable_if_unreachable():
            return await script(keys=self.keys(provider), args=args)

    async def allow(self, provider: str, now: datetime) -> bool:
        answer = int(
            await self._run(
                self._allow,
                provider,
                since_epoch(now),
                self._cooldown_ms,
                self._probe_ms,
                self._ttl_ms,
            )
        )
        if answer == 2:
            log.info("circuit breaker of %s half-open: sending a probe", provider)
        return answer > 0

    async def record_success(self, provider: str, now: datetime) -> None:
        if int(await self._run(self._success, provider)):
            log.info("circuit breaker of %s closed: the probe succeeded", provider)

    async def record_failure(self, provider: str, now: datetime) -> None:
        opened = await self._run(
            self._failure,
            provider,
            since_epoch(now),
            self._window_ms,
            self._threshold,
            self._ttl_ms,
        )
        if int(opened):
            log.warning(
                "circuit breaker of %s opened; next probe in %ss",
                provider,
                self._cooldown_ms / 1000,
            )

    async def state(self, provider: str, now: datetime) -> BreakerState:
        """The stored state. OPEN stays OPEN past its cool-down until an ``allow()`` takes the
        probe, since only then does a request go out."""
        with unavailable_if_unreachable():
            raw = await self._client.hget(self.keys(provider)[0], "state")
        return BreakerState.CLOSED if raw is None else BreakerState(text(raw))
