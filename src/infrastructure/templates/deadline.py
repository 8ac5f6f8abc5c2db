"""A time limit for pure-Python work that cannot be cancelled from outside.

A template loop is ordinary bytecode in the rendering thread: neither asyncio cancellation
nor a timeout on a future stops it. One watchdog thread keeps the deadlines of all running
calls and, when one passes, raises DeadlineExceeded inside that call's thread with
PyThreadState_SetAsyncExc (SIGALRM is out: it reaches only the main thread and would
disturb the server's own signal handling). A lock and a per-call flag guarantee the
exception is never delivered after the call has returned; a delivery that raced with the
return is withdrawn before the thread goes on with other work.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceeded(BaseException):
    """Raised inside the timed thread. A BaseException, so no ``except Exception`` in the
    timed code (Jinja's runtime has several) swallows it."""


class TimedOut(Exception):
    """The call ran past its deadline and was stopped."""


@dataclass(order=True)
class _Watch:
    deadline: float
    seq: int
    thread_id: int = field(compare=False)
    done: bool = field(default=False, compare=False)
    fired: bool = field(default=False, compare=False)


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )


class Watchdog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap: list[_Watch] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def run(self, fn: Callable[[], T], seconds: float) -> T:
        """``fn()`` in the calling thread; TimedOut if it is still running after ``seconds``."""
        watch = _Watch(time.monotonic() + seconds, next(self._seq), threading.get_ident())
        with self._wake:
            self._ensure_thread()
            heapq.heappush(self._heap, watch)
            self._wake.notify()
        try:
            try:
                return fn()
            finally:
                with self._lock:
                    watch.done = True
                    if watch.fired:
                        # Delivered but maybe not raised yet: withdraw it.
                        _set_async_exc(watch.thread_id, None)
        except DeadlineExceeded as error:
            raise TimedOut(f"took longer than {seconds * 1000:.0f} ms") from error

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="template-watchdog")
            self._thread.daemon = True
            self._thread.start()

    def _loop(self) -> None:
        with self._wake:
            while True:
                while self._heap and self._heap[0].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wake.wait()
                    continue
                delay = self._heap[0].deadline - time.monotonic()
                if delay > 0:
                    self._wake.wait(delay)
                    continue
                watch = heapq.heappop(self._heap)
                if not watch.done:
                    watch.fired = True
                    _set_async_exc(watch.thread_id, DeadlineExceeded)
