"""The gauges read from Redis (queue depth, oldest due age, breaker states), refreshed by a
task on the process' event loop: the exposition thread only reads what the task last set."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from application.ports.clock import Clock
from application.ports.scheduler import Scheduler
from application.ports.sender import BreakerState, CircuitBreaker
from infrastructure.telemetry.metrics import Metrics

log = logging.getLogger(__name__)


class GaugeRefresher:
    """``guarded``: providers behind ``breaker``, read on every refresh; ``unguarded``:
    providers without one, reported closed once and for all."""

    def __init__(
        self,
        metrics: Metrics,
        scheduler: Scheduler,
        clock: Clock,
        *,
        breaker: CircuitBreaker | None = None,
        guarded: Sequence[str] = (),
        unguarded: Sequence[str] = (),
        interval: float = 2.0,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self._metrics = metrics
        self._scheduler = scheduler
        self._clock = clock
        self._breaker = breaker
        self._guarded = tuple(guarded) if breaker is not None else ()
        self._interval = interval
        metrics.set_breakers({name: BreakerState.CLOSED for name in unguarded})

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def refresh(self) -> None:
        """Read both sources; one that cannot be read keeps its last values (its refreshed
        timestamp stops moving). Never raises: metrics must not take the process down."""
        now = self._clock.now()
        try:
            stats = await self._scheduler.stats(now)
        except Exception as error:
            log.debug("queue gauges not refreshed: %r", error)
        else:
            self._metrics.set_queue(stats)
        states: dict[str, BreakerState] = {}
        try:
            for provider in self._guarded:
                assert self._breaker is not None
                states[provider] = await self._breaker.state(provider, now)
        except Exception as error:
            log.debug("breaker gauges not refreshed: %r", error)
        else:
            self._metrics.set_breakers(states)
