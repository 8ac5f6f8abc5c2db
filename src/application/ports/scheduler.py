"""The delivery queue: which notification is due next, and who holds it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from domain.notification import Priority


@dataclass(frozen=True, slots=True)
class QueueItem:
    notification_id: str
    priority: Priority
    due_at: datetime


@dataclass(frozen=True, slots=True)
class Claim:
    """A lease on one notification. ``token`` grows with every claim of any item (fencing)."""

    notification_id: str
    priority: Priority
    token: int
    lease_deadline: datetime


class Scheduler(Protocol):
    async def enqueue(self, items: Sequence[QueueItem], now: datetime) -> None:
        """Make items claimable at their due time (now if due_at <= now). Idempotent per id:
        re-enqueueing an id that is waiting moves it; an id that is leased is left leased."""
        ...

    async def claim(self, limit: int, now: datetime, lease: timedelta) -> list[Claim]:
        """Atomically take up to ``limit`` due items, highest priority first (FIFO within one),
        with the starvation guard, and lease them until ``now + lease``."""
        ...

    async def ack(self, claim: Claim) -> bool:
        """Done with it: drop the lease. False if the lease was lost to another holder."""
        ...

    async def retry_at(self, claim: Claim, due_at: datetime, now: datetime) -> bool:
        """Release the lease and make the item due again at ``due_at``. False if lease lost."""
        ...

    async def extend(self, claim: Claim, now: datetime, lease: timedelta) -> bool:
        """Push the lease deadline out. False if the lease was lost."""
        ...

    async def remove(self, notification_id: str) -> None:
        """Forget the item wherever it waits (cancel). A held lease is left to its holder."""
        ...

    async def recover_expired_leases(self, now: datetime, limit: int) -> int:
        """Return items whose lease deadline passed to the ready queue. Returns how many."""
        ...

    async def contains_many(self, notification_ids: Sequence[str]) -> list[bool]:
        """For each id, whether it waits or is leased anywhere in the queue."""
        ...

    async def run_id(self) -> str:
        """Identifies the queue's storage instance; a change means its contents may be gone."""
        ...
