"""Request ids: every RPC gets one (the caller's ``x-request-id``, or a new one), every log line
written while serving it carries it, so "what happened to my call" is one grep away. The caller
gets it back in the trailing metadata, with the response or the error (a streaming call in the
initial metadata too). A call that fails is logged with it at INFO."""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from typing import Final

import grpc

from interfaces.grpc.call_wrapping import Continuation, final_code, wrap_calls

log = logging.getLogger(__name__)

HEADER: Final = "x-request-id"
# What a caller's id may look like: anything else (too long, spaces, an email address or a
# phone number, which '@', '+' or '.' would let through) is replaced, so a log line cannot be
# forged, bloated or made to carry personal data through it.
_ACCEPTABLE: Final = re.compile(r"[A-Za-z0-9_:-]{1,128}")


# The id of the call being served, for the error path (errors.abort_with) to send back.
_serving: ContextVar[str] = ContextVar("serving_request_id", default="")


def serving_request_id() -> str:
    return _serving.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


def _incoming(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == HEADER and isinstance(value, str) and _ACCEPTABLE.fullmatch(value):
            return value
    return ""


class RequestIdInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self, bind: Callable[[str], None], new_id: Callable[[], str] = new_request_id
    ) -> None:
        self._bind = bind
        self._new_id = new_id

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        streams: bool = handler.response_streaming

        @contextlib.asynccontextmanager
        async def serving(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
            request_id = _incoming(context) or self._new_id()
            self._bind(request_id)
            _serving.set(request_id)
            if streams:
                # A stream's caller needs it before the stream ends.
                await context.send_initial_metadata(((HEADER, request_id),))
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                yield
            except BaseException as raised:
                error = raised
                raise
            else:
                # In the trailers: sending headers ahead of a unary response cost a quarter of
                # a call's CPU. An error carries it in its own trailers (errors.abort_with).
                context.set_trailing_metadata(
                    (*(context.trailing_metadata() or ()), (HEADER, request_id))
                )
            finally:
                code = final_code(context, error)
                if code is not grpc.StatusCode.OK:
                    log.info(
                        "%s ended %s after %.1f ms: %s",
                        method,
                        code.name,
                        (time.perf_counter() - started) * 1000,
                        context.details() or error or "",
                    )

        return wrap_calls(handler, serving)
