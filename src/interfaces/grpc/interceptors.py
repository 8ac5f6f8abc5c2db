"""Server interceptors: API-key authentication and the translation of errors to statuses."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator

import grpc

from application.errors import Unauthenticated
from application.principal import Principal
from application.use_cases.authenticate import AuthenticateApiKey
from interfaces.grpc.call_wrapping import Continuation, wrap_calls
from interfaces.grpc.errors import abort_with

_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("notifyd_principal")

# Health checks and reflection must work without a key (load balancers, grpcurl list).
PUBLIC_SERVICE_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


def current_principal() -> Principal:
    """The authenticated caller of the RPC being served."""
    return _principal.get()


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

        @contextlib.asynccontextmanager
        async def authenticated(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
            # Set in the task that serves the call, so the servicer sees it.
            try:
                principal = await self._authenticate.execute(_bearer_token(context))
            except Exception as error:
                await abort_with(context, error)
            _principal.set(principal)
            yield

        return wrap_calls(handler, authenticated)
