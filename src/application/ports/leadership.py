"""Leadership: one process of many takes a role (such as reconciling the queue) for a term."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol


class Leadership(Protocol):
    """Who holds a role is the adapter's business: each process is one holder."""

    async def hold(self, role: str, term: timedelta) -> bool:
        """Take ``role`` for ``term`` from now, or extend the term if this process holds it.
        False while another holder's term runs."""
        ...

    async def resign(self, role: str) -> None:
        """Give ``role`` up now if this process holds it, so that another can take it without
        waiting for the term to run out."""
        ...
