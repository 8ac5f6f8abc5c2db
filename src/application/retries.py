"""Starting a transaction over when it lost a race (a compare-and-set or a unique key another
writer took first): the rerun sees the winner's write and usually just answers from it."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def rerun_on(race: type[Exception], attempts: int, run: Callable[[], Awaitable[T]]) -> T:
    """``run()``, run again after each ``race`` error, at most ``attempts`` times in all; the
    last attempt's error propagates."""
    for _ in range(attempts - 1):
        with contextlib.suppress(race):
            return await run()
    return await run()
