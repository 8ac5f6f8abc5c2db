"""Wrapping a servicer's handlers, whatever their kind, and reading the status a call ended
with: what every observing interceptor (traces, metrics, request ids) and authentication share."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]
# Runs around one call, in the task that serves it (so context variables it sets are the
# call's); exceptions pass through it.
Around = Callable[[grpc.aio.ServicerContext], contextlib.AbstractAsyncContextManager[object]]


def final_code(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    """The status the RPC ends with: what abort or set_code chose, CANCELLED when the client
    left (or its deadline passed), UNKNOWN for any other exception, else OK."""
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    if error is not None and not isinstance(error, grpc.aio.AbortError):
        return grpc.StatusCode.UNKNOWN
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if code is None:
        return grpc.StatusCode.UNKNOWN if error is not None else grpc.StatusCode.OK
    # Some grpc versions hand back the numeric code.
    return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)


def wrap_calls(handler: grpc.RpcMethodHandler, around: Around) -> grpc.RpcMethodHandler:
    """``handler`` with each call run inside ``around(context)``, whatever its kind (unary or
    streaming, coroutine or async generator). A synchronous handler is returned as it is."""
    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    )
    for kind, make in kinds:
        inner = getattr(handler, kind)
        if inner is None:
            continue
        if inspect.isasyncgenfunction(inner):
            behaviour: Any = _around_generator(inner, around)
        elif inspect.iscoroutinefunction(inner):
            behaviour = _around_coroutine(inner, around)
        else:
            return handler
        return make(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


def _around_coroutine(
    inner: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], around: Around
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with around(context):
            return await inner(request, context)

    return call


def _around_generator(
    inner: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]], around: Around
) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async with around(context):
            async for item in inner(request, context):
                yield item

    return call
