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
    # SENDING -> CANCELLED: a cancel was requested while it was being sent, and the attempt
    # failed (or its worker vanished): it is not tried again.
    Status.SENDING: frozenset(
        {
            Status.SENDING,
            Status.SENT,
            Status.QUEUED,
            Status.FAILED,
            Status.EXPIRED,
            Status.CANCELLED,
        }
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

# A provider accepted it: only these can be engaged with (and count as sent in statistics).
PROVIDER_ACCEPTED: frozenset[Status] = frozenset({Status.SENT, Status.DELIVERED, Status.READ})

# Not handed to a provider yet: a cancel stops these at once.
CANCELLABLE: frozenset[Status] = frozenset({Status.PENDING, Status.QUEUED})

# Not sent, and might still be: a cancel reaches these. One being sent (its worker holds it) and
# a dead letter (an operator could replay it) keep the request, which stops any further attempt.
UNSENT: frozenset[Status] = CANCELLABLE | {Status.SENDING, Status.FAILED}

# States in which the outcome of sending is settled (the provider accepted it, or it never will).
SETTLED: frozenset[Status] = TERMINAL | {Status.SENT, Status.DELIVERED}


def can_transition(current: Status, target: Status) -> bool:
    return target in TRANSITIONS[current]
