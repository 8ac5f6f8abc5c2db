"""The inbox wake-up pump runs in a context of its own, not in the stream call's that
started it (whose request id and span would otherwise label every line the pump logs)."""

from __future__ import annotations

import asyncio

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from redis.asyncio import Redis

from infrastructure.inbox.redis_notifier import RedisInboxNotifier
from infrastructure.telemetry.logs import bind_request_id, current_request_id


async def test_the_pump_does_not_inherit_the_callers_request_id_or_span() -> None:
    # Never connects: the pump's body is replaced by one that reports what it sees.
    notifier = RedisInboxNotifier(Redis(host="127.0.0.1", port=1))
    seen: list[tuple[str, bool]] = []

    async def pump() -> None:
        seen.append((current_request_id(), trace.get_current_span().get_span_context().is_valid))

    notifier._run = pump  # type: ignore[method-assign]
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("test")

    async def stream_call() -> None:
        bind_request_id("req-stream-1")
        with tracer.start_as_current_span("StreamInbox"):
            notifier._start_pump()
            assert notifier._pump is not None
            await notifier._pump

    await asyncio.create_task(stream_call())
    assert seen == [("", False)]
