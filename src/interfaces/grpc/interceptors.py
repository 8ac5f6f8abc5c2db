"""Server interceptors: API-key authentication and the translation of errors to statuses."""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from application.errors import Unauthenticated
from application.principal import Principal
from application.use_cases.authenticate import AuthenticateApiKey
from interfaces.grpc.errors import abort_with

_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("notifyd_principal")

# Health checks and reflection must work without a key (load balancers, grpcurl list).
PUBLIC_SERVICE_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


def current_principal() -> Principal:
    """The authenticated caller of the RPC being served."""
    return _principal.get()


def _wrap(
    handler: grpc.RpcMethodHandler,
    around: Callable[[Any, grpc.aio.ServicerContext], Awaitable[None]],
) -> grpc.RpcMethodHandler:
    """Run ``around`` before the RPC's behaviour, in the same task (so context vars flow)."""
    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await around(request, context)
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        inner_us = handler.unary_stream

        async def unary_stream(
            request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            await around(request, context)
            async for item in inner_us(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(
            unary_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


def _bearer_token(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("authorization metadata must be 'Bearer <api key>'")
            return token.strip()
    return ""


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Requires ``authorization: Bearer <api key>``; the key alone decides the tenant."""

    def __init__(self, authenticate: AuthenticateApiKey) -> None:
        self._authenticate = authenticate

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(PUBLIC_SERVICE_PREFIXES):
            return handler

        async def authenticate(_: Any, context: grpc.aio.ServicerContext) -> None:
            try:
                principal = await self._authenticate.execute(_bearer_token(context))
            except Exception as error:
                await abort_with(context, error)
            _principal.set(principal)

        return _wrap(handler, authenticate)
