"""Waking the streams that follow a user's inbox when its change log grows."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol


class InboxWakeups(Protocol):
    async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109 (a bounded wait is the contract)
        """True when the user's inbox may have changed since the last call; False when
        ``timeout`` seconds passed without a sign (the stream then checks anyway)."""
        ...


class InboxNotifier(Protocol):
    async def publish(self, tenant_id: str, user_id: str) -> None:
        """Tell every process that this user's inbox log grew (after the commit). Best
        effort: a lost wake-up only delays a stream until its next check."""
        ...

    def subscribe(self, tenant_id: str, user_id: str) -> AbstractAsyncContextManager[InboxWakeups]:
        """Wake-ups for one user while the context is open."""
        ...
