"""What the policy step decided about a new notification (see domain.policy.decision)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class Verdict(enum.StrEnum):
    SEND = "SEND"
    HOLD = "HOLD"
    SUPPRESS = "SUPPRESS"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    # Recorded in the notification's history: never a silent drop or delay.
    reason: str = ""
    # For HOLD: when it may go out.
    until: datetime | None = None

    @classmethod
    def send(cls, reason: str = "") -> Decision:
        return cls(Verdict.SEND, reason)
