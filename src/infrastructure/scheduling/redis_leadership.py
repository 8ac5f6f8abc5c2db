"""The ``Leadership`` port on Redis: a role is a key holding its holder's name, which expires
with the term. Take and extend, and give up, are each one script, so that a holder never
extends or deletes a term another holder has taken since."""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta
from typing import Final

from redis.asyncio import Redis

from application.ports.leadership import Hold
from infrastructure.redis_calls import duration_ms, unavailable_if_unreachable
from infrastructure.scheduling.redis_scheduler import script_source

_HOLDS: Final = {0: Hold.REFUSED, 1: Hold.KEPT, 2: Hold.TAKEN}


def process_holder() -> str:
    """A name no other process shares, and an operator can trace to a host and process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RedisLeadership:
    def __init__(self, client: Redis, *, holder: str, namespace: str = "notifyd") -> None:
        if not holder:
            raise ValueError("holder must be non-empty")
        if not namespace or "{" in namespace or "}" in namespace:
            # Braces would change the hash tag: the role would live apart from the queue.
            raise ValueError(f"namespace must be non-empty and brace-free, got {namespace!r}")
        self._client = client
        self._holder = holder
        self._prefix = f"{{{namespace}}}:role:"
        self._hold = client.register_script(script_source("hold_role.lua"))
        self._resign = client.register_script(script_source("resign_role.lua"))

    def key(self, role: str) -> str:
        return self._prefix + role

    async def hold(self, role: str, term: timedelta) -> Hold:
        term_ms = duration_ms(term, "term")
        with unavailable_if_unreachable():
            held = await self._hold(keys=[self.key(role)], args=[self._holder, term_ms])
        return _HOLDS[int(held)]

    async def resign(self, role: str) -> None:
        with unavailable_if_unreachable():
            await self._resign(keys=[self.key(role)], args=[self._holder])
