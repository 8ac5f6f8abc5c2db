"""Inbox wake-ups over Redis pub/sub.

``publish`` is a PUBLISH on the user's channel. Each process keeps ONE subscriber connection
(a background pump) and fans its messages out to the local streams that follow that user; a
channel is subscribed while at least one local stream follows it.

Wake-ups are hints, never data: when Redis is away, publishing is skipped and streams fall back
to their poll; when the pump reconnects it wakes every local stream, since whatever was published
meanwhile is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from application.ports.inbox_notifier import InboxWakeups

log = logging.getLogger(__name__)

_REDIS_FAILURES = (RedisError, OSError, TimeoutError)


class _Wakeups:
    """One stream's flag: raised by the pump, lowered by the stream when it sees it."""

    def __init__(self) -> None:
        self._flag = asyncio.Event()

    def wake(self) -> None:
        self._flag.set()

    async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109 (a bounded wait is the contract)
        try:
            async with asyncio.timeout(timeout):
                await self._flag.wait()
        except TimeoutError:
            return False
        self._flag.clear()
        return True


class RedisInboxNotifier:
    def __init__(
        self,
        client: Redis,
        *,
        namespace: str = "notifyd",
        command_timeout: float = 1.0,
        ping_interval: float = 5.0,
        reconnect_delay: float = 0.2,
        max_reconnect_delay: float = 5.0,
    ) -> None:
        if not namespace or "{" in namespace or "}" in namespace:
            raise ValueError(f"namespace must be non-empty and brace-free, got {namespace!r}")
        self._client = client
        self._prefix = f"{{{namespace}}}:inbox:"
        # The pump always listens here, so its connection exists before any stream subscribes.
        self._home = f"{{{namespace}}}:inbox"
        self._timeout = command_timeout
        self._ping_interval = ping_interval
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max_reconnect_delay
        self._waiters: dict[str, set[_Wakeups]] = {}
        # Channels SUBSCRIBEd on the pump's current connection; changed under the lock only.
        self._subscribed: set[str] = set()
        self._lock = asyncio.Lock()
        self._pubsub: PubSub | None = None
        # Set once the pump's first connection attempt has succeeded or failed.
        self._first_attempt = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._closed = False
        self._publish_failing = False
        self._pump_failing = False

    def channel(self, tenant_id: str, user_id: str) -> str:
        # The tenant's length keeps ("a:b", "c") and ("a", "b:c") on different channels.
        return f"{self._prefix}{len(tenant_id)}:{tenant_id}:{user_id}"

    @property
    def listening(self) -> bool:
        """True while the pump's connection is up (streams then get wake-ups, not just polls)."""
        return self._pubsub is not None

    def local_channels(self) -> set[str]:
        """The channels some stream of this process follows."""
        return set(self._waiters)

    async def publish(self, tenant_id: str, user_id: str) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._client.publish(self.channel(tenant_id, user_id), b"")
        except _REDIS_FAILURES as error:
            if not self._publish_failing:
                log.warning("inbox wake-ups are not being published (streams poll): %s", error)
            self._publish_failing = True
            return
        if self._publish_failing:
            log.info("inbox wake-ups are published again")
            self._publish_failing = False

    @contextlib.asynccontextmanager
    async def subscribe(self, tenant_id: str, user_id: str) -> AsyncIterator[InboxWakeups]:
        channel = self.channel(tenant_id, user_id)
        wakeups = _Wakeups()
        self._start_pump()
        # Bookkeeping is synchronous, so a cancelled stream can never leave its flag behind.
        self._waiters.setdefault(channel, set()).add(wakeups)
        try:
            if self._pump is not None:
                # A starting pump is given a moment, so a healthy Redis wakes even the first
                # streams; later, a failing one is not waited for (the stream polls meanwhile).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._timeout):
                        await self._first_attempt.wait()
            await self._sync()
            yield wakeups
        finally:
            waiters = self._waiters.get(channel)
            if waiters is not None:
                waiters.discard(wakeups)
                if not waiters:
                    del self._waiters[channel]
            await self._sync()

    async def close(self) -> None:
        self._closed = True
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    def _start_pump(self) -> None:
        if self._closed or (self._pump is not None and not self._pump.done()):
            return
        # A context of its own: the pump outlives the stream that happened to start it, and
        # must not carry that call's request id or trace into its logs and spans.
        self._pump = asyncio.get_running_loop().create_task(
            self._run(), name="inbox-wakeups", context=contextvars.Context()
        )

    async def _sync(self) -> None:
        """Make the pump's subscriptions match the channels local streams follow."""
        async with self._lock:
            pubsub = self._pubsub
            if pubsub is None:
                return  # the pump subscribes to everything wanted when it (re)connects
            wanted = set(self._waiters)
            missing = wanted - self._subscribed
            extra = self._subscribed - wanted
            try:
                async with asyncio.timeout(self._timeout):
                    if missing:
                        await pubsub.subscribe(*missing)
                    if extra:
                        await pubsub.unsubscribe(*extra)
            except _REDIS_FAILURES as error:
                log.warning("inbox wake-up subscription failed, reconnecting: %s", error)
                self._detach(pubsub)
                # Breaks the pump's read, so it reconnects and subscribes afresh.
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                return
            self._subscribed = wanted

    def _detach(self, pubsub: PubSub) -> None:
        if self._pubsub is pubsub:
            self._pubsub = None
            self._subscribed = set()

    async def _run(self) -> None:
        delay = self._reconnect_delay
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                async with self._lock:
                    wanted = set(self._waiters)
                    async with asyncio.timeout(self._timeout):
                        await pubsub.subscribe(self._home, *wanted)
                    self._pubsub, self._subscribed = pubsub, wanted
                if self._pump_failing:
                    log.info("inbox wake-ups are received again")
                self._pump_failing = False
                delay = self._reconnect_delay
                # Anything published while nobody listened is lost: every stream reads now.
                self._wake_all()
                self._first_attempt.set()
                await self._listen(pubsub)
            except Exception as error:
                if not self._pump_failing:
                    log.warning("inbox wake-ups are not being received (streams poll): %s", error)
                self._pump_failing = True
            finally:
                self._first_attempt.set()
                self._detach(pubsub)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_reconnect_delay)

    async def _listen(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        heard = pinged = loop.time()
        while self._pubsub is pubsub:
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=self._ping_interval
            )
            now = loop.time()
            if message is not None:
                heard = now
                if message["type"] == "message":
                    self._wake(message["channel"])
            if now - pinged >= self._ping_interval:
                # A connection that went silent (half-open TCP) would otherwise never fail.
                if heard < pinged:
                    raise RedisConnectionError("no answer to PING on the inbox subscription")
                await pubsub.ping()
                pinged = now

    def _wake(self, channel: bytes | str) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        for wakeups in self._waiters.get(name, ()):
            wakeups.wake()

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for wakeups in waiters:
                wakeups.wake()
