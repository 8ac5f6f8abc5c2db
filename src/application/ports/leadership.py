"""Leadership: one process of many takes a role (such as reconciling the queue) for a term."""

from __future__ import annotations

import enum
from datetime import timedelta
from typing import Protocol


class Hold(enum.Enum):
    TAKEN = "taken"  # nobody held it: this process has it now, for a new term
    KEPT = "kept"  # this process held it already: its term starts again
    REFUSED = "refused"  # another holder's term runs


class Leadership(Protocol):
    """Who holds a role is the adapter's business: each process is one holder."""

    async def hold(self, role: str, term: timedelta) -> Hold:
        """Take ``role`` for ``term`` from now, or extend the term if this process holds it."""
        ...

    async def resign(self, role: str) -> None:
        """Give ``role`` up now if this process holds it, so that another can take it without
        waiting for the term to run out."""
        ...
