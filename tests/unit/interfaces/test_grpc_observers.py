"""The tracing and request-id interceptors on a real grpc.aio server (loopback, port 0)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from domain.errors import PreconditionFailed
from infrastructure.telemetry.logs import current_request_id, mask
from interfaces.grpc.errors import abort_with
from interfaces.grpc.request_ids import RequestIdInterceptor
from interfaces.grpc.tracing_interceptor import TracingInterceptor

SERVICE = "test.v1.Echo"
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


class Echo:
    """Each method records what the interceptors left in its context."""

    def __init__(self) -> None:
        self.request_ids: list[str] = []

    async def say(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.request_ids.append(current_request_id())
        if request == b"bad":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "text: must not be bad")
        if request == b"crash":
            try:
                raise KeyError("token=s3cr3t-cause")
            except KeyError as cause:
                raise RuntimeError("a bug while sending to ada@example.com") from cause
        if request == b"gone":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        if request == b"detailed":
            await abort_with(context, PreconditionFailed("order", "not now", reason="LATER"))
        return request

    async def count(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        self.request_ids.append(current_request_id())
        for i in range(int(request)):
            yield str(i).encode()


@pytest.fixture
def exported() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exported: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exported))
    return provider


async def serve(echo: Echo, interceptors: list[Any]) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server(interceptors=interceptors)
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Say": grpc.unary_unary_rpc_method_handler(echo.say),
                    "Count": grpc.unary_stream_rpc_method_handler(echo.count),
                },
            )
        ]
    )
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def traced(provider: TracerProvider) -> AsyncIterator[tuple[Echo, grpc.aio.Channel]]:
    echo = Echo()
    server, address = await serve(echo, [TracingInterceptor(provider.get_tracer("test"), mask)])
    async with grpc.aio.insecure_channel(address) as channel:
        yield echo, channel
    await server.stop(None)


async def say(
    channel: grpc.aio.Channel, text: bytes, metadata: tuple[tuple[str, str], ...] = ()
) -> bytes:
    reply: bytes = await channel.unary_unary(f"/{SERVICE}/Say")(text, metadata=metadata)
    return reply


async def only_span(exported: InMemorySpanExporter) -> ReadableSpan:
    # The caller can see an error status a moment before the server's span has ended; the
    # exporter has nothing to wait on, so poll.
    deadline = time.monotonic() + 2
    while not exported.get_finished_spans() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    [span] = exported.get_finished_spans()
    return span


# -- tracing ----------------------------------------------------------------------------------


async def test_a_call_is_a_server_span_named_after_the_method(
    traced: tuple[Echo, grpc.aio.Channel], exported: InMemorySpanExporter
) -> None:
    _, channel = traced
    assert await say(channel, b"hi") == b"hi"

    span = await only_span(exported)
    assert span.name == f"{SERVICE}/Say"
    assert span.kind is SpanKind.SERVER
    assert dict(span.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": SERVICE,
        "rpc.method": "Say",
        "rpc.grpc.status_code": 0,
    }
    assert span.status.status_code is StatusCode.UNSET
    assert span.parent is None


async def test_the_callers_traceparent_is_the_parent(
    traced: tuple[Echo, grpc.aio.Channel], exported: InMemorySpanExporter
) -> None:
    _, channel = traced
    await say(channel, b"hi", (("traceparent", TRACEPARENT),))

    span = await only_span(exported)
    assert span.context is not None
    assert span.parent is not None
    assert f"{span.context.trace_id:032x}" == CALLER_TRACE
    assert f"{span.parent.span_id:016x}" == CALLER_SPAN
    assert span.parent.is_remote


@pytest.mark.parametrize(
    ("request_bytes", "code", "error"),
    [
        # The caller's mistake: recorded, but the server did nothing wrong.
        (b"bad", grpc.StatusCode.INVALID_ARGUMENT, False),
        (b"gone", grpc.StatusCode.UNAVAILABLE, True),
        (b"crash", grpc.StatusCode.UNKNOWN, True),
    ],
)
async def test_the_status_code_is_recorded(
    traced: tuple[Echo, grpc.aio.Channel],
    exported: InMemorySpanExporter,
    request_bytes: bytes,
    code: grpc.StatusCode,
    error: bool,
) -> None:
    _, channel = traced
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await say(channel, request_bytes)
    assert raised.value.code() is code

    span = await only_span(exported)
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == code.value[0]
    assert (span.status.status_code is StatusCode.ERROR) is error
    recorded = [event.name for event in span.events]
    assert recorded == (["exception"] if request_bytes == b"crash" else [])


async def test_an_exception_is_recorded_masked_without_its_stack(
    traced: tuple[Echo, grpc.aio.Channel], exported: InMemorySpanExporter
) -> None:
    _, channel = traced
    with pytest.raises(grpc.aio.AioRpcError):
        await say(channel, b"crash")
    [event] = (await only_span(exported)).events
    assert dict(event.attributes or {}) == {
        "exception.type": "RuntimeError",
        "exception.message": "a bug while sending to ***@example.com",
    }


async def test_a_stream_is_one_span_for_its_whole_life(
    traced: tuple[Echo, grpc.aio.Channel], exported: InMemorySpanExporter
) -> None:
    _, channel = traced
    replies = [r async for r in channel.unary_stream(f"/{SERVICE}/Count")(b"3")]
    assert replies == [b"0", b"1", b"2"]

    span = await only_span(exported)
    assert span.name == f"{SERVICE}/Count"
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == 0


async def test_health_checks_are_not_traced(
    traced: tuple[Echo, grpc.aio.Channel], exported: InMemorySpanExporter
) -> None:
    _, channel = traced
    stub = health_pb2_grpc.HealthStub(channel)
    await stub.Check(health_pb2.HealthCheckRequest(service=""))
    assert exported.get_finished_spans() == ()


async def test_without_a_tracer_handlers_pass_through_untouched() -> None:
    sentinel = grpc.unary_unary_rpc_method_handler(Echo().say)

    async def continuation(_: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return sentinel

    details = SimpleNamespace(method=f"/{SERVICE}/Say", invocation_metadata=())
    assert await TracingInterceptor(None, mask).intercept_service(continuation, details) is sentinel


# -- request ids ------------------------------------------------------------------------------


@pytest.fixture
async def with_ids() -> AsyncIterator[tuple[Echo, grpc.aio.Channel]]:
    from infrastructure.telemetry.logs import bind_request_id

    echo = Echo()
    ids = iter(["generated-1", "generated-2"])
    server, address = await serve(echo, [RequestIdInterceptor(bind_request_id, lambda: next(ids))])
    async with grpc.aio.insecure_channel(address) as channel:
        yield echo, channel
    await server.stop(None)


async def test_a_call_without_an_id_gets_one_and_is_told_it(
    with_ids: tuple[Echo, grpc.aio.Channel],
) -> None:
    echo, channel = with_ids
    call = channel.unary_unary(f"/{SERVICE}/Say")(b"hi")
    assert await call == b"hi"
    assert ("x-request-id", "generated-1") in tuple(await call.trailing_metadata())
    assert echo.request_ids == ["generated-1"]


async def test_the_callers_id_is_kept(with_ids: tuple[Echo, grpc.aio.Channel]) -> None:
    echo, channel = with_ids
    call = channel.unary_unary(f"/{SERVICE}/Say")(b"hi", metadata=(("x-request-id", "abc-42"),))
    await call
    assert ("x-request-id", "abc-42") in tuple(await call.trailing_metadata())
    assert echo.request_ids == ["abc-42"]


@pytest.mark.parametrize(
    "unfit",
    [
        "has space",
        "x" * 129,
        "semi;colon",
        "",
        # Personal data would reach every log line of the call.
        "ada@example.com",
        "+14155550123",
        "415.555.2671",
    ],
)
async def test_an_unfit_id_is_replaced(with_ids: tuple[Echo, grpc.aio.Channel], unfit: str) -> None:
    echo, channel = with_ids
    await channel.unary_unary(f"/{SERVICE}/Say")(b"hi", metadata=(("x-request-id", unfit),))
    assert echo.request_ids == ["generated-1"]


async def test_a_failed_call_is_logged_with_its_id_and_status(
    with_ids: tuple[Echo, grpc.aio.Channel], caplog: pytest.LogCaptureFixture
) -> None:
    _, channel = with_ids
    caplog.set_level(logging.INFO, logger="interfaces.grpc.request_ids")
    call = channel.unary_unary(f"/{SERVICE}/Say")(b"bad")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    [record] = [r for r in caplog.records if r.name == "interfaces.grpc.request_ids"]
    assert record.getMessage().startswith(f"/{SERVICE}/Say ended INVALID_ARGUMENT after ")
    assert record.getMessage().endswith(": text: must not be bad")


async def test_an_error_carries_the_id_beside_its_details(
    with_ids: tuple[Echo, grpc.aio.Channel],
) -> None:
    _, channel = with_ids
    call = channel.unary_unary(f"/{SERVICE}/Say")(b"detailed")
    with pytest.raises(grpc.aio.AioRpcError):
        await call
    trailers = dict(await call.trailing_metadata())
    assert trailers["x-request-id"] == "generated-1"
    details = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert details.message == "order: not now"


async def test_a_stream_is_told_its_id_before_it_ends(
    with_ids: tuple[Echo, grpc.aio.Channel],
) -> None:
    echo, channel = with_ids
    call = channel.unary_stream(f"/{SERVICE}/Count")(b"2")
    assert ("x-request-id", "generated-1") in tuple(await call.initial_metadata())
    assert [r async for r in call] == [b"0", b"1"]
    assert ("x-request-id", "generated-1") in tuple(await call.trailing_metadata())
    assert echo.request_ids == ["generated-1"]


async def test_a_successful_call_is_not_logged(
    with_ids: tuple[Echo, grpc.aio.Channel], caplog: pytest.LogCaptureFixture
) -> None:
    _, channel = with_ids
    caplog.set_level(logging.INFO, logger="interfaces.grpc.request_ids")
    await channel.unary_unary(f"/{SERVICE}/Say")(b"hi")
    assert [r for r in caplog.records if r.name == "interfaces.grpc.request_ids"] == []
