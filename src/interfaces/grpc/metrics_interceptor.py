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
        if handler.unary_unary is not None:
            return self._unary_unary(handler, service, method)
        if handler.unary_stream is not None:
            return self._unary_stream(handler, service, method)
        if handler.stream_unary is not None:
            return self._stream_unary(handler, service, method)
        if handler.stream_stream is not None:
            return self._stream_stream(handler, service, method)
        return handler

    def _call(self, grpc_type: str, service: str, method: str) -> _Call:
        return _Call(self._metrics, self._clock, (grpc_type, service, method))

    def _unary_unary(
        self, handler: grpc.RpcMethodHandler, service: str, method: str
    ) -> grpc.RpcMethodHandler:
        inner = handler.unary_unary

        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = self._call(UNARY, service, method)
            call.received()
            try:
                response = await inner(request, context)
            except BaseException as error:
                call.handled(context, error)
                raise
            call.answered(context)
            return response

        return grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _unary_stream(
        self, handler: grpc.RpcMethodHandler, service: str, method: str
    ) -> grpc.RpcMethodHandler:
        inner = handler.unary_stream
        if not inspect.isasyncgenfunction(inner):
            # Writes through context.write(): the call is counted, its messages cannot be.
            return grpc.unary_stream_rpc_method_handler(
                self._counted(inner, SERVER_STREAM, service, method, requests=False),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            call = self._call(SERVER_STREAM, service, method)
            call.received()
            try:
                async for response in inner(request, context):
                    call.sent()
                    yield response
            except BaseException as error:
                call.handled(context, error)
                raise
            call.handled(context, None)

        return grpc.unary_stream_rpc_method_handler(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _stream_unary(
        self, handler: grpc.RpcMethodHandler, service: str, method: str
    ) -> grpc.RpcMethodHandler:
        return grpc.stream_unary_rpc_method_handler(
            self._counted(handler.stream_unary, CLIENT_STREAM, service, method, requests=True),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _stream_stream(
        self, handler: grpc.RpcMethodHandler, service: str, method: str
    ) -> grpc.RpcMethodHandler:
        inner = handler.stream_stream
        if not inspect.isasyncgenfunction(inner):
            return grpc.stream_stream_rpc_method_handler(
                self._counted(inner, BIDI_STREAM, service, method, requests=True),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        async def behaviour(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            call = self._call(BIDI_STREAM, service, method)
            try:
                async for response in inner(_counting(requests, call), context):
                    call.sent()
                    yield response
            except BaseException as error:
                call.handled(context, error)
                raise
            call.handled(context, None)

        return grpc.stream_stream_rpc_method_handler(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

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
            if grpc_type == CLIENT_STREAM:
                call.answered(context)
            else:
                call.handled(context, None)
            return response

        return behaviour


async def _counting(requests: AsyncIterator[Any], call: _Call) -> AsyncIterator[Any]:
    async for request in requests:
        call.received()
        yield request
