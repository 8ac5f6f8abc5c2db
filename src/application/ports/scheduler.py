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
    # The W3C trace context the delivery continues ("" = none, or keep the one stored).
    trace_context: str = ""


@dataclass(frozen=True, slots=True)
class Claim:
    """A lease on one notification. ``token`` grows with every claim of any item (fencing)."""

    notification_id: str
    priority: Priority
    token: int
    lease_deadline: datetime
    # The W3C trace context stored when the item was enqueued ("" when tracing is off).
    trace_context: str = ""


@dataclass(frozen=True, slots=True)
class PriorityStats:
    """One priority's items: waiting to be claimed (``ready``), waiting for their due time
    (``delayed``: scheduled sends, backoffs, holds) and claimed (``leased``)."""

    ready: int = 0
    delayed: int = 0
    leased: int = 0
    # How long the longest-waiting item that is due (ready, or delayed past its due time) has
    # been due; zero when none is.
    oldest_due_age: timedelta = timedelta(0)


@dataclass(frozen=True, slots=True)
class QueueStats:
    by_priority: dict[Priority, PriorityStats]
    # Delayed and leased items a bounded snapshot did not attribute to a priority (a very
    # large delayed set): with them, every state's total is exact.
    unattributed_delayed: int = 0
    unattributed_leased: int = 0


class Scheduler(Protocol):
    async def enqueue(self, items: Sequence[QueueItem], now: datetime) -> None:
        """Make items claimable at their due time (now if due_at <= now). Idempotent per id:
        re-enqueueing an id that is waiting moves it; an id that is leased is left leased."""
        ...

    async def claim(self, limit: int, now: datetime, lease: timedelta) -> list[Claim]:
        """Atomically take up to ``limit`` due items, highest priority first (FIFO within one),
        with the starvation guard, and lease them until ``now + lease``. An item scheduled for
        later is claimable from its due time on, with nothing else to wait for."""
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

    async def stats(self, now: datetime) -> QueueStats:
        """Counts per priority and state, and the oldest due item's age: read only, one
        consistent snapshot, every priority present."""
        ...
