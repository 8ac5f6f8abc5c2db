"""When to try again after a transient failure: capped exponential backoff with full jitter."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: timedelta = timedelta(seconds=1)
    max_delay: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def allows_another(self, attempts_made: int) -> bool:
        return attempts_made < self.max_attempts

    def next_attempt_at(
        self,
        now: datetime,
        attempts_made: int,
        random: Callable[[], float],
        retry_after: timedelta | None = None,
    ) -> datetime:
        """Full jitter (a uniform pick in [0, cap]) spreads a thundering herd of retries; a
        provider's Retry-After is a floor, since retrying sooner is certain to be refused."""
        # Double only while below the cap: 2**n of a large attempt count overflows timedelta.
        cap = self.base_delay
        for _ in range(max(attempts_made - 1, 0)):
            if cap >= self.max_delay:
                break
            cap *= 2
        cap = min(cap, self.max_delay)
        delay = cap * random()
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_delay))
        return now + delay
