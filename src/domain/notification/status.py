"""The notification status state machine (DESIGN.md section 3)."""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    PENDING = "PENDING"
    QUEUED = "QUEUED"
    SENDING = "SENDING"
    SENT = "SENT"
    DELIVERED = "DELIVERED"
    READ = "READ"
    SUPPRESSED = "SUPPRESSED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"


# SENDING -> SENDING is a rescue: the worker that held the lease vanished mid-attempt.
# SENT -> READ covers a read receipt that arrives before (or without) a delivery receipt.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.QUEUED, Status.SUPPRESSED, Status.CANCELLED}),
    Status.QUEUED: frozenset({Status.SENDING, Status.CANCELLED, Status.EXPIRED, Status.FAILED}),
    Status.SENDING: frozenset(
        {Status.SENDING, Status.SENT, Status.QUEUED, Status.FAILED, Status.EXPIRED}
    ),
    Status.SENT: frozenset({Status.DELIVERED, Status.READ}),
    Status.DELIVERED: frozenset({Status.READ}),
    Status.READ: frozenset(),
    Status.SUPPRESSED: frozenset(),
    Status.CANCELLED: frozenset(),
    # A dead letter an operator replays goes back to the queue (same id, history kept).
    Status.FAILED: frozenset({Status.QUEUED}),
    Status.EXPIRED: frozenset(),
}

# Nothing further happens to a notification in one of these states by itself; only an
# operator's replay takes a FAILED one (a dead letter) back to the queue.
TERMINAL: frozenset[Status] = frozenset(
    {Status.READ, Status.SUPPRESSED, Status.CANCELLED, Status.FAILED, Status.EXPIRED}
)

# States in which the outcome of sending is settled (the provider accepted it, or it never will).
SETTLED: frozenset[Status] = TERMINAL | {Status.SENT, Status.DELIVERED}


def can_transition(current: Status, target: Status) -> bool:
    return target in TRANSITIONS[current]
