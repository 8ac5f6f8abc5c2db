"""Inbox wake-ups over the real Redis: one subscriber connection per notifier fanning out to
local streams, across processes (two notifiers), through a dropped connection, and with no
Redis at all."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from infrastructure.inbox import RedisInboxNotifier

pytestmark = pytest.mark.integration

WAIT = 5.0


@pytest.fixture
async def notifier(redis_client: aioredis.Redis) -> AsyncIterator[RedisInboxNotifier]:
    notifier = RedisInboxNotifier(redis_client, namespace="inbox-test", ping_interval=0.5)
    yield notifier
    await notifier.close()


async def eventually(probe: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(200):
        if await probe():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"never: {what}")


async def subscribers(client: aioredis.Redis, channel: str) -> int:
    [(_, count)] = await client.pubsub_numsub(channel)
    return int(count)


async def test_a_publish_wakes_every_local_stream_of_that_user_only(
    notifier: RedisInboxNotifier, redis_client: aioredis.Redis
) -> None:
    async with (
        notifier.subscribe("tenant-a", "user-1") as phone,
        notifier.subscribe("tenant-a", "user-1") as laptop,
        notifier.subscribe("tenant-a", "user-2") as someone_else,
        notifier.subscribe("tenant-b", "user-1") as other_tenant,
    ):
        # The pump wakes everyone once when it connects (it may have missed something).
        for wakeups in (phone, laptop, someone_else, other_tenant):
            await wakeups.wait(0)
        # One connection serves both of user-1's streams.
        assert await subscribers(redis_client, notifier.channel("tenant-a", "user-1")) == 1

        await notifier.publish("tenant-a", "user-1")
        assert await phone.wait(WAIT)
        assert await laptop.wait(WAIT)
        # Seen once: the flag is lowered until the next publish.
        assert not await phone.wait(0)
        # Redis delivers in order on the one connection, so by now the others would be set.
        assert not await someone_else.wait(0)
        assert not await other_tenant.wait(0)


async def test_leaving_unsubscribes_once_the_last_local_stream_is_gone(
    notifier: RedisInboxNotifier, redis_client: aioredis.Redis
) -> None:
    channel = notifier.channel("tenant-a", "user-1")
    async with notifier.subscribe("tenant-a", "user-1"):
        async with notifier.subscribe("tenant-a", "user-1"):
            pass
        assert notifier.local_channels() == {channel}
        assert await subscribers(redis_client, channel) == 1
    assert notifier.local_channels() == set()

    async def gone() -> bool:
        return await subscribers(redis_client, channel) == 0

    await eventually(gone, "the channel was unsubscribed")


async def test_another_process_publishing_wakes_this_one(
    notifier: RedisInboxNotifier, redis_url: str
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    worker = RedisInboxNotifier(client, namespace="inbox-test")
    try:
        async with notifier.subscribe("tenant-a", "user-1") as stream:
            await stream.wait(0)
            await worker.publish("tenant-a", "user-1")
            assert await stream.wait(WAIT)
    finally:
        await worker.close()
        await client.aclose()


async def test_channels_of_look_alike_tenants_and_users_differ(
    notifier: RedisInboxNotifier,
) -> None:
    assert notifier.channel("a:b", "c") != notifier.channel("a", "b:c")


async def test_a_dropped_connection_is_reopened_and_every_stream_woken(
    notifier: RedisInboxNotifier, redis_client: aioredis.Redis
) -> None:
    channel = notifier.channel("tenant-a", "user-1")
    async with notifier.subscribe("tenant-a", "user-1") as stream:
        await stream.wait(0)
        assert await redis_client.client_kill_filter(_type="pubsub") >= 1
        # Whatever was published while it was away is lost, so the reconnect wakes the stream.
        assert await stream.wait(WAIT)

        async def resubscribed() -> bool:
            return await subscribers(redis_client, channel) == 1

        await eventually(resubscribed, "the channel was subscribed again")
        await stream.wait(0)
        await notifier.publish("tenant-a", "user-1")
        assert await stream.wait(WAIT)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_without_redis_streams_only_poll_and_nothing_fails() -> None:
    client = aioredis.Redis.from_url(
        f"redis://127.0.0.1:{_closed_port()}", socket_connect_timeout=0.5, socket_timeout=0.5
    )
    # Waiting out this timeout anywhere would trip the test's shorter ones.
    notifier = RedisInboxNotifier(client, command_timeout=30)
    try:
        async with asyncio.timeout(10):
            await notifier.publish("tenant-a", "user-1")
        for _ in range(2):
            async with asyncio.timeout(10):
                async with notifier.subscribe("tenant-a", "user-1") as stream:
                    assert not await stream.wait(0.05)
                    assert not notifier.listening
    finally:
        await notifier.close()
        await client.aclose()
