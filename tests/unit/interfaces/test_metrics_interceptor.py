"""MetricsInterceptor on a real grpc.aio server (loopback, port 0): labels and final codes of
unary and streaming calls, aborts, unexpected exceptions and refused authentications."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest

from application.errors import Unauthenticated
from application.principal import Principal
from interfaces.grpc.interceptors import AuthInterceptor
from interfaces.grpc.metrics_interceptor import MetricsInterceptor, split_method

SERVICE = "test.v1.Probe"
GOOD = (("authorization", "Bearer good-key"),)


class RecordingMetrics:
    """The RpcMetrics port, recording what it is told (counts per label set)."""

    def __init__(self) -> None:
        self.starts: Counter[tuple[str, str, str]] = Counter()
        self.receives: Counter[tuple[str, str, str]] = Counter()
        self.sends: Counter[tuple[str, str, str]] = Counter()
        self.outcomes: list[tuple[str, str, str, str]] = []
        self.seconds: list[float] = []

    def started(self, grpc_type: str, service: str, method: str) -> None:
        self.starts[(grpc_type, service, method)] += 1

    def received(self, grpc_type: str, service: str, method: str) -> None:
        self.receives[(grpc_type, service, method)] += 1

    def sent(self, grpc_type: str, service: str, method: str) -> None:
        self.sends[(grpc_type, service, method)] += 1

    def handled(self, grpc_type: str, service: str, method: str, code: str, seconds: float) -> None:
        self.outcomes.append((grpc_type, service, method, code))
        self.seconds.append(seconds)


class FakeAuthenticate:
    async def execute(self, key: str) -> Principal:
        if key != "good-key":
            raise Unauthenticated("unknown API key")
        return Principal("tenant-a", "svc")


async def ok(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return b"pong:" + request


async def invalid(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "field x is bad")
    raise AssertionError("abort returned")


async def bug(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise RuntimeError("a bug")


async def set_code(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    context.set_code(grpc.StatusCode.NOT_FOUND)
    context.set_details("nothing here")
    return b""


async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await asyncio.sleep(10)
    return b""


async def three(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for i in range(3):
        yield bytes([i])


async def one_then_abort(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"first"
    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not now")


async def forever(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    while True:
        yield b"tick"
        await asyncio.sleep(0.01)


async def echo(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request


def _handlers() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Ok": grpc.unary_unary_rpc_method_handler(ok),
            "Invalid": grpc.unary_unary_rpc_method_handler(invalid),
            "Bug": grpc.unary_unary_rpc_method_handler(bug),
            "SetCode": grpc.unary_unary_rpc_method_handler(set_code),
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
            "Three": grpc.unary_stream_rpc_method_handler(three),
            "OneThenAbort": grpc.unary_stream_rpc_method_handler(one_then_abort),
            "Forever": grpc.unary_stream_rpc_method_handler(forever),
            "Echo": grpc.stream_stream_rpc_method_handler(echo),
        },
    )


@pytest.fixture
async def probe() -> AsyncIterator[tuple[RecordingMetrics, grpc.aio.Channel]]:
    metrics = RecordingMetrics()
    server = grpc.aio.server(
        interceptors=[MetricsInterceptor(metrics), AuthInterceptor(FakeAuthenticate())]
    )
    server.add_generic_rpc_handlers((_handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield metrics, channel
    await server.stop(0)


def labels(kind: str, method: str) -> tuple[str, str, str]:
    return (kind, SERVICE, method)


async def unary(channel: grpc.aio.Channel, method: str, **kw: Any) -> grpc.StatusCode:
    call = channel.unary_unary(f"/{SERVICE}/{method}")
    try:
        await call(b"ping", metadata=kw.pop("metadata", GOOD), **kw)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def settled(metrics: RecordingMetrics, count: int) -> None:
    """The server records after the client has its answer: wait for it briefly."""
    for _ in range(200):
        if len(metrics.outcomes) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {metrics.outcomes} handled")


def test_split_method() -> None:
    assert split_method("/notify.v1.NotificationService/SendNotification") == (
        "notify.v1.NotificationService",
        "SendNotification",
    )
    assert split_method("nonsense") == ("unknown", "nonsense")


async def test_unary_ok_counts_started_handled_and_both_messages(
    probe: tuple[RecordingMetrics, grpc.aio.Channel],
) -> None:
    metrics, channel = probe
    assert await unary(channel, "Ok") is grpc.StatusCode.OK
    await settled(metrics, 1)
    assert metrics.outcomes == [(*labels("unary", "Ok"), "OK")]
    assert metrics.starts == {labels("unary", "Ok"): 1}
    assert metrics.receives == {labels("unary", "Ok"): 1}
    assert metrics.sends == {labels("unary", "Ok"): 1}
    assert metrics.seconds[0] >= 0


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("Invalid", grpc.StatusCode.INVALID_ARGUMENT),  # context.abort
        ("Bug", grpc.StatusCode.UNKNOWN),  # an unexpected exception
        ("SetCode", grpc.StatusCode.NOT_FOUND),  # context.set_code, then a normal return
    ],
)
async def test_unary_failures_carry_the_code_the_client_saw(
    probe: tuple[RecordingMetrics, grpc.aio.Channel], method: str, expected: grpc.StatusCode
) -> None:
    metrics, channel = probe
    seen = await unary(channel, method)
    assert seen is expected
    await settled(metrics, 1)
    assert metrics.outcomes == [(*labels("unary", method), expected.name)]
    assert metrics.starts == {labels("unary", method): 1}
    assert metrics.sends == {}, "a failed unary call sends no response message"


async def test_refused_authentication_is_counted(
    probe: tuple[RecordingMetrics, grpc.aio.Channel],
) -> None:
    metrics, channel = probe
    bad = (("authorization", "Bearer wrong"),)
    assert await unary(channel, "Ok", metadata=bad) is grpc.StatusCode.UNAUTHENTICATED
    assert await unary(channel, "Ok", metadata=()) is grpc.StatusCode.UNAUTHENTICATED
    await settled(metrics, 2)
    assert metrics.outcomes == [(*labels("unary", "Ok"), "UNAUTHENTICATED")] * 2


async def test_deadline_exceeded_by_the_client_is_cancelled_on_the_server(
    probe: tuple[RecordingMetrics, grpc.aio.Channel],
) -> None:
    metrics, channel = probe
    assert await unary(channel, "Slow", timeout=0.2) is grpc.StatusCode.DEADLINE_EXCEEDED
    await settled(metrics, 1)
    assert metrics.outcomes == [(*labels("unary", "Slow"), "CANCELLED")]


async def test_server_stream_counts_each_message_sent(
    probe: tuple[RecordingMetrics, grpc.aio.Channel],
) -> None:
    metrics, channel = probe
    call = channel.unary_stream(f"/{SERVICE}/Three")(b"go", metadata=GOOD)
    assert [m async for m in call] == [b"\x00", b"\x01", b"\x02"]
    await settled(metrics, 1)
    assert metrics.outcomes == [(*labels("server_stream", "Three"), "OK")]
    assert metrics.receives == {labels("server_stream", "Three"): 1}
    assert metrics.sends == {labels("server_stream", "Three"): 3}


async def test_server_stream_abort_keeps_its_code(
    probe: tuple[RecordingMetrics, grpc.aio.Channel],
) -> None:
    metrics, channel = probe
    call = channel.unary_stream(f"/{SERVICE}/OneThenAbort")(b"go", metadata=GOOD)
    got: list[bytes] = []

    async def drain() -> None:
        async for message in call:
            got.append(message)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await drain()
    assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert got == [b"first"]
    await settled(metrics, 1)
    assert metrics.outcomes == [(*labels("server_stream", "OneThenAbort"), "FAILED_PRECONDITION")]
    assert metrics.sends == {labels("server_stream", "OneThenAbort"): 1}


async def test_server_stream_cancelled_by_the_client(
    probe: tuple[RecordingMetrics, grpc.aio.Channel],
) -> None:
    metrics, channel = probe
    call = channel.unary_stream(f"/{SERVICE}/Forever")(b"go", metadata=GOOD)
    assert await call.read() == b"tick"
    call.cancel()
    await settled(metrics, 1)
    assert metrics.outcomes == [(*labels("server_stream", "Forever"), "CANCELLED")]


async def test_bidi_stream_counts_messages_both_ways(
    probe: tuple[RecordingMetrics, grpc.aio.Channel],
) -> None:
    metrics, channel = probe

    def requests() -> Iterator[bytes]:
        yield from (b"a", b"b")

    call = channel.stream_stream(f"/{SERVICE}/Echo")(requests(), metadata=GOOD)
    assert [m async for m in call] == [b"a", b"b"]
    await settled(metrics, 1)
    assert metrics.outcomes == [(*labels("bidi_stream", "Echo"), "OK")]
    assert metrics.receives == {labels("bidi_stream", "Echo"): 2}
    assert metrics.sends == {labels("bidi_stream", "Echo"): 2}


async def test_unknown_methods_are_not_counted(
    probe: tuple[RecordingMetrics, grpc.aio.Channel],
) -> None:
    metrics, channel = probe
    assert await unary(channel, "NoSuchMethod") is grpc.StatusCode.UNIMPLEMENTED
    await asyncio.sleep(0.05)
    assert metrics.starts == {}
    assert metrics.outcomes == []
