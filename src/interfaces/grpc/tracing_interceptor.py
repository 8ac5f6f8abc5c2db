"""A SERVER span per RPC, continuing the caller's trace (W3C traceparent in the metadata).

Registered as an observer (outside authentication), so refused calls are traced too. Health
checks and reflection are left out: load balancers probe every few seconds, and a trace per
probe would bury the ones that matter.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Final

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from interfaces.grpc.call_wrapping import Continuation, final_code, wrap_calls

UNTRACED_PREFIXES: Final = ("/grpc.health.v1.", "/grpc.reflection.")

# The codes that make a server span an error (OpenTelemetry's RPC conventions): the rest are
# the caller's business (a bad argument is a correct answer, not a failure of the server).
SERVER_ERRORS: Final = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {
        key: value
        for key, value in context.invocation_metadata() or ()
        if isinstance(value, str)  # binary (-bin) entries carry no trace context
    }


class TracingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Without a tracer (tracing off) it hands every handler through untouched."""

    def __init__(self, tracer: trace.Tracer | None, mask: Callable[[str], str]) -> None:
        self._tracer = tracer
        # Exception messages leave the process in spans: masked like log lines.
        self._mask = mask

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if self._tracer is None or handler is None or method.startswith(UNTRACED_PREFIXES):
            return handler
        tracer, mask = self._tracer, self._mask
        name = method.lstrip("/")
        service, _, rpc_method = name.rpartition("/")

        @contextlib.asynccontextmanager
        async def span(context: grpc.aio.ServicerContext) -> AsyncIterator[trace.Span]:
            with tracer.start_as_current_span(
                name,
                # The global propagator: W3C trace context (and baggage) unless OTEL_PROPAGATORS
                # says otherwise. Nothing in the metadata: a new trace.
                context=propagate.extract(_metadata(context)),
                kind=SpanKind.SERVER,
                attributes={
                    "rpc.system": "grpc",
                    "rpc.service": service,
                    "rpc.method": rpc_method,
                },
                record_exception=False,
                set_status_on_exception=False,
            ) as current:
                error: BaseException | None = None
                try:
                    yield current
                except BaseException as raised:
                    error = raised
                    raise
                finally:
                    _finish(current, context, error, mask)

        return wrap_calls(handler, span)


def _finish(
    span: trace.Span,
    context: grpc.aio.ServicerContext,
    error: BaseException | None,
    mask: Callable[[str], str],
) -> None:
    code = final_code(context, error)
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, code.name))
        if error is not None and not isinstance(error, grpc.aio.AbortError):
            # Not span.record_exception: it would export the raw message and a stack trace
            # holding every chained cause's text.
            span.add_event(
                "exception",
                {"exception.type": type(error).__qualname__, "exception.message": mask(str(error))},
            )
