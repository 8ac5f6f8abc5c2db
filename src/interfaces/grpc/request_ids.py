"""Request ids: every RPC gets one (the caller's ``x-request-id``, or a new one), every log line
written while serving it carries it, and the caller gets it back as initial metadata, so "what
happened to my call" is one grep away. A call that fails is logged with it at INFO."""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Final

import grpc

from interfaces.grpc.call_wrapping import Continuation, final_code, wrap_calls

log = logging.getLogger(__name__)

HEADER: Final = "x-request-id"
# What a caller's id may look like: anything else (too long, spaces, an email address or a
# phone number, which '@', '+' or '.' would let through) is replaced, so a log line cannot be
# forged, bloated or made to carry personal data through it.
_ACCEPTABLE: Final = re.compile(r"[A-Za-z0-9_:-]{1,128}")


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

        @contextlib.asynccontextmanager
        async def serving(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
            request_id = _incoming(context) or self._new_id()
            self._bind(request_id)
            # Sent ahead of the response (or the error): the caller sees it either way.
            await context.send_initial_metadata(((HEADER, request_id),))
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                yield
            except BaseException as raised:
                error = raised
                raise
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
