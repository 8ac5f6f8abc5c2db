"""Server metrics in the shape of go-grpc-prometheus: every RPC counted when it starts and when
it ends (with its final status code), its duration, and the messages each way.

Registered as an observer (outside the authentication interceptor), so refused calls are
counted too. The final code comes from wherever the RPC set it: a normal return (OK, or what
``context.set_code`` chose), ``context.abort`` (its code), any other exception (UNKNOWN, as
gRPC itself reports it) or a cancellation by the client or its deadline (CANCELLED).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, Protocol

import grpc

from interfaces.grpc.call_wrapping import Continuation, final_code

UNARY = "unary"
SERVER_STREAM = "server_stream"
CLIENT_STREAM = "client_stream"
BIDI_STREAM = "bidi_stream"

OK: Final = "OK"


class RpcMetrics(Protocol):
    """Where the counts go; ``grpc_type`` is one of the four names above, ``code`` a
    ``grpc.StatusCode`` name (OK, INVALID_ARGUMENT, ...)."""

    def started(self, grpc_type: str, service: str, method: str) -> None: ...

    def received(self, grpc_type: str, service: str, method: str) -> None: ...

    def sent(self, grpc_type: str, service: str, method: str) -> None: ...

    def handled(
        self, grpc_type: str, service: str, method: str, code: str, seconds: float
    ) -> None: ...


def split_method(full_method: str) -> tuple[str, str]:
    """'/notify.v1.NotificationService/SendNotification' -> (service, method)."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service or "unknown", method or "unknown"


class _Call:
    """One RPC's labels and start time."""

    def __init__(
        self, metrics: RpcMetrics, clock: Callable[[], float], labels: tuple[str, str, str]
    ) -> None:
        self._metrics = metrics
        self._clock = clock
        self._labels = labels
        self._started = clock()
        metrics.started(*labels)

    def received(self) -> None:
        self._metrics.received(*self._labels)

    def sent(self) -> None:
        self._metrics.sent(*self._labels)

    def handled(self, context: grpc.aio.ServicerContext, error: BaseException | None) -> None:
        self.finished(final_code(context, error).name)

    def finished(self, code: str) -> None:
        self._metrics.handled(*self._labels, code, self._clock() - self._started)

    def answered(self, context: grpc.aio.ServicerContext) -> None:
        """A unary response was returned: sent unless the RPC set a failing code instead."""
        code = final_code(context, None).name
        if code == OK:
            self.sent()
        self.finished(code)


# Each kind of handler, its go-grpc-prometheus type, and how to rebuild it around a behaviour.
_KINDS: Final = (
    ("unary_unary", UNARY, grpc.unary_unary_rpc_method_handler),
    ("unary_stream", SERVER_STREAM, grpc.unary_stream_rpc_method_handler),
    ("stream_unary", CLIENT_STREAM, grpc.stream_unary_rpc_method_handler),
    ("stream_stream", BIDI_STREAM, grpc.stream_stream_rpc_method_handler),
)


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, metrics: RpcMetrics, clock: Callable[[], float] = time.perf_counter) -> None:
        self._metrics = metrics
        self._clock = clock

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            # Unknown method: gRPC answers UNIMPLEMENTED itself; go-grpc-prometheus does not
            # count those either (there is no handler to label).
            return None
        service, method = split_method(handler_call_details.method)
        for kind, grpc_type, make in _KINDS:
            inner = getattr(handler, kind)
            if inner is None:
                continue
            requests = grpc_type in (CLIENT_STREAM, BIDI_STREAM)
            if inspect.isasyncgenfunction(inner):
                behaviour: Any = self._streamed(
                    inner, grpc_type, service, method, requests=requests
                )
            else:
                # A coroutine; a streaming one writes through context.write(): the call is
                # counted, its messages cannot be.
                behaviour = self._counted(inner, grpc_type, service, method, requests=requests)
            return make(
                behaviour,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _call(self, grpc_type: str, service: str, method: str) -> _Call:
        return _Call(self._metrics, self._clock, (grpc_type, service, method))

    def _streamed(
        self,
        inner: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]],
        grpc_type: str,
        service: str,
        method: str,
        *,
        requests: bool,
    ) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
        """An async-generator behaviour: each response yielded counts as a message sent."""

        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            call = self._call(grpc_type, service, method)
            if requests:
                request = _counting(request, call)
            else:
                call.received()
            try:
                async for response in inner(request, context):
                    call.sent()
                    yield response
            except BaseException as error:
                call.handled(context, error)
                raise
            call.handled(context, None)

        return behaviour

    def _counted(
        self,
        inner: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]],
        grpc_type: str,
        service: str,
        method: str,
        *,
        requests: bool,
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        """A coroutine behaviour: started, handled and the requests read through an iterator
        (for request streams); a unary response counts as one message sent."""

        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = self._call(grpc_type, service, method)
            if requests:
                request = _counting(request, call)
            else:
                call.received()
            try:
                response = await inner(request, context)
            except BaseException as error:
                call.handled(context, error)
                raise
            if grpc_type in (UNARY, CLIENT_STREAM):
                call.answered(context)
            else:
                call.handled(context, None)
            return response

        return behaviour


async def _counting(requests: AsyncIterator[Any], call: _Call) -> AsyncIterator[Any]:
    async for request in requests:
        call.received()
        yield request
