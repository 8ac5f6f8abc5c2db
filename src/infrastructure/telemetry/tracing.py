"""OpenTelemetry traces, off unless the standard OTEL_* variables ask for them.

One trace per notification: the RPC that accepts it (a SERVER span, see
interfaces/grpc/tracing_interceptor.py), its enqueue (PRODUCER), and every delivery attempt
(CONSUMER, in a worker, maybe another process, maybe minutes later) with a CLIENT span per
provider tried. The context crosses Redis as text: the scheduler stores ``current_context()``
per notification id at enqueue and hands it back on claim.

Configuration is the SDK's own wherever it has one: OTEL_SDK_DISABLED, OTEL_SERVICE_NAME and
OTEL_RESOURCE_ATTRIBUTES (the Resource), OTEL_TRACES_SAMPLER(_ARG) (the TracerProvider),
OTEL_BSP_* (the BatchSpanProcessor), and OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS,
_TIMEOUT, _COMPRESSION, _CERTIFICATE (the OTLP exporter). What is decided here is only whether
to trace at all and which exporters to build:

- OTEL_SDK_DISABLED=true: off, whatever else is set.
- OTEL_TRACES_EXPORTER: a comma-separated list; "otlp" (OTLP over http/protobuf, the only
  OTLP protocol installed), "console", or any installed ``opentelemetry_traces_exporter``
  entry point; "none" turns tracing off.
- Unset, but an OTLP endpoint is (OTEL_EXPORTER_OTLP_ENDPOINT or _TRACES_ENDPOINT): "otlp".
- Neither: off. No TracerProvider is built and every tracer is the API's no-op one.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_SDK_DISABLED,
)
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from application.ports.scheduler import Claim, QueueItem, QueueStats, Scheduler
from application.ports.sender import DeliveryFailed, Provider
from domain.notification import Channel, DeliveryResult, Notification, Priority
from infrastructure.config import ConfigError
from infrastructure.telemetry.logs import mask

log = logging.getLogger(__name__)

OTEL_TRACES_EXPORTER: Final = "OTEL_TRACES_EXPORTER"
DEFAULT_SERVICE_NAME: Final = "notifyd"
TRACER_NAME: Final = "notifyd"
OTLP_PROTOCOL: Final = "http/protobuf"

# Redis is notifyd's own hop, so the stored context is always W3C trace context, whatever
# OTEL_PROPAGATORS says about the wire to callers.
_W3C: Final = TraceContextTextMapPropagator()


# -- configuration ----------------------------------------------------------------------------


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The trace exporters the environment asks for; empty when tracing is off."""
    if environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true":
        return []
    raw = environ.get(OTEL_TRACES_EXPORTER, "").strip()
    if not raw:
        endpoint = environ.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or environ.get(
            OTEL_EXPORTER_OTLP_ENDPOINT
        )
        return ["otlp"] if endpoint else []
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    return [] if "none" in names else list(dict.fromkeys(names))


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    if name in ("otlp", "otlp_proto_http"):
        protocol = (
            environ.get(OTEL_EXPORTER_OTLP_TRACES_PROTOCOL)
            or environ.get(OTEL_EXPORTER_OTLP_PROTOCOL)
            or OTLP_PROTOCOL
        ).strip()
        if protocol != OTLP_PROTOCOL:
            raise ConfigError(
                f"OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL: notifyd exports OTLP over "
                f"{OTLP_PROTOCOL} only, not {protocol!r}"
            )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # Endpoint, headers, timeout, compression and certificates come from the environment.
        return OTLPSpanExporter()
    found = importlib.metadata.entry_points(group="opentelemetry_traces_exporter", name=name)
    if not found:
        raise ConfigError(f"{OTEL_TRACES_EXPORTER}: no trace exporter {name!r} is installed")
    exporter_class = next(iter(found)).load()
    exporter = exporter_class()
    if not isinstance(exporter, SpanExporter):
        raise ConfigError(f"{OTEL_TRACES_EXPORTER}: {name!r} is not a span exporter")
    return exporter


def _resource() -> Resource:
    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME and falls back to
    # "unknown_service:<executable>"; notifyd replaces only that fallback.
    resource = Resource.create()
    defaults: dict[str, str] = {}
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        defaults[SERVICE_NAME] = DEFAULT_SERVICE_NAME
    if SERVICE_VERSION not in resource.attributes:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            defaults[SERVICE_VERSION] = importlib.metadata.version("notifyd")
    return resource.merge(Resource(defaults)) if defaults else resource


def build_tracer_provider() -> TracerProvider | None:
    """A TracerProvider exporting in batches, or None when the environment (os.environ: the
    SDK reads it too) leaves tracing off. Raises ConfigError for an exporter or protocol that
    is not available."""
    names = exporter_names(os.environ)
    if not names:
        return None
    exporters = [_exporter(name, os.environ) for name in names]
    # The sampler comes from OTEL_TRACES_SAMPLER(_ARG) inside the SDK. Shut down explicitly by
    # shutdown_tracing() (the CLI's exit path), not by the SDK's own atexit hook.
    provider = TracerProvider(resource=_resource(), shutdown_on_exit=False)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


# -- the tracer and what it traces ------------------------------------------------------------


class Tracing:
    """notifyd's tracer, the conversion of trace contexts to and from the text stored in Redis,
    and the wrappers that add spans around the queue and the providers. Disabled (no provider)
    it builds nothing: the container then leaves every component untraced."""

    def __init__(self, provider: trace.TracerProvider | None = None) -> None:
        self.provider = provider
        self.enabled = provider is not None
        self.tracer: trace.Tracer = (
            provider.get_tracer(TRACER_NAME) if provider is not None else trace.NoOpTracer()
        )

    # For the container: None means "untraced", so nothing does any tracing work.

    @property
    def context_source(self) -> Callable[[], str] | None:
        return self.current_context if self.enabled else None

    @property
    def server_tracer(self) -> trace.Tracer | None:
        return self.tracer if self.enabled else None

    @property
    def delivery_spans(
        self,
    ) -> Callable[[Claim], contextlib.AbstractContextManager[trace.Span]] | None:
        return self.delivery_span if self.enabled else None

    def traced_scheduler(self, scheduler: Scheduler) -> Scheduler:
        return EnqueueSpans(scheduler, self.tracer) if self.enabled else scheduler

    def traced_providers(self, providers: Sequence[Provider]) -> list[Provider]:
        if not self.enabled:
            return list(providers)
        return [ProviderSpans(p, self.tracer) for p in providers]

    # The context across Redis.

    @staticmethod
    def current_context() -> str:
        """The current span's context as stored in Redis: the W3C traceparent, and the
        tracestate after a newline when there is one; "" outside any span."""
        carrier: dict[str, str] = {}
        _W3C.inject(carrier)
        parent = carrier.get("traceparent", "")
        state = carrier.get("tracestate", "")
        return f"{parent}\n{state}" if parent and state else parent

    @staticmethod
    def parent_context(text: str) -> Context:
        """The context stored by current_context(), as a parent; an empty (root) context for
        "" or anything unreadable."""
        parent, _, state = text.partition("\n")
        carrier = {"traceparent": parent}
        if state:
            carrier["tracestate"] = state
        # Extracted into an empty context: the delivery's parent is the enqueue, never
        # whatever happens to be current in the worker.
        return _W3C.extract(carrier, context=Context()) if parent else Context()

    @contextlib.contextmanager
    def delivery_span(self, claim: Claim) -> Iterator[trace.Span]:
        """The span of one delivery attempt, child of the enqueue that queued it."""
        with self.tracer.start_as_current_span(
            "deliver notification",
            context=self.parent_context(claim.trace_context),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "notifyd",
                "messaging.operation.type": "process",
                "messaging.message.id": claim.notification_id,
                "notifyd.notification.id": claim.notification_id,
                "notifyd.notification.priority": Priority(claim.priority).name,
                "notifyd.lease.token": claim.token,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except Exception as error:
                record_masked_exception(span, error)
                raise


def record_masked_exception(span: trace.Span, error: BaseException) -> None:
    """An "exception" event with the error's type and masked message, and the span's status
    set to ERROR with the same. The SDK's own record_exception would
    export the raw message and a stack trace with every chained cause's text: an address or
    token in any of them would leave the process unmasked."""
    message = mask(str(error))
    span.add_event(
        "exception",
        {"exception.type": type(error).__qualname__, "exception.message": message},
    )
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__qualname__}: {message}"))


_tracing = Tracing()


def configure_tracing() -> Tracing:
    """Build the TracerProvider the environment asks for (if any), make it the global one and
    notifyd's; returns notifyd's Tracing (disabled when off). Once per process."""
    global _tracing
    provider = build_tracer_provider()
    if provider is None:
        return _tracing
    trace.set_tracer_provider(provider)
    _tracing = Tracing(provider)
    log.info("tracing on: exporting spans to %s", ", ".join(exporter_names(os.environ)))
    return _tracing


def active_tracing() -> Tracing:
    """What configure_tracing() set up (disabled until it ran and found tracing asked for)."""
    return _tracing


def shutdown_tracing() -> None:
    """Export what is still buffered and stop the exporters (at process exit)."""
    provider = _tracing.provider
    if isinstance(provider, TracerProvider):
        provider.shutdown()


# -- spans around the queue and the providers -------------------------------------------------


class EnqueueSpans:
    """The Scheduler with a PRODUCER span around enqueue: the context stored for the
    delivery is this span's, so the trace reads RPC -> enqueue -> deliver -> provider."""

    def __init__(self, inner: Scheduler, tracer: trace.Tracer) -> None:
        self._inner = inner
        self._tracer = tracer

    async def enqueue(self, items: Sequence[QueueItem], now: datetime) -> None:
        attributes: dict[str, str | int] = {
            "messaging.system": "notifyd",
            "messaging.operation.type": "send",
            "messaging.batch.message_count": len(items),
        }
        if len(items) == 1:
            attributes["notifyd.notification.id"] = items[0].notification_id
            attributes["notifyd.notification.priority"] = Priority(items[0].priority).name
        with self._tracer.start_as_current_span(
            "enqueue notification",
            kind=SpanKind.PRODUCER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                await self._inner.enqueue(items, now)
            except Exception as error:
                record_masked_exception(span, error)
                raise

    async def claim(self, limit: int, now: datetime, lease: timedelta) -> list[Claim]:
        return await self._inner.claim(limit, now, lease)

    async def ack(self, claim: Claim) -> bool:
        return await self._inner.ack(claim)

    async def retry_at(self, claim: Claim, due_at: datetime, now: datetime) -> bool:
        return await self._inner.retry_at(claim, due_at, now)

    async def extend(self, claim: Claim, now: datetime, lease: timedelta) -> bool:
        return await self._inner.extend(claim, now, lease)

    async def remove(self, notification_id: str) -> None:
        await self._inner.remove(notification_id)

    async def recover_expired_leases(self, now: datetime, limit: int) -> int:
        return await self._inner.recover_expired_leases(now, limit)

    async def contains_many(self, notification_ids: Sequence[str]) -> list[bool]:
        return await self._inner.contains_many(notification_ids)

    async def run_id(self) -> str:
        return await self._inner.run_id()

    async def stats(self, now: datetime) -> QueueStats:
        return await self._inner.stats(now)


class ProviderSpans:
    """A Provider with a CLIENT span around each request: provider, channel, outcome, and on
    failure the error class (masked message as the status description)."""

    def __init__(self, inner: Provider, tracer: trace.Tracer) -> None:
        self._inner = inner
        self._tracer = tracer
        self.name: str = inner.name
        self.channel: Channel = inner.channel

    async def send(self, notification: Notification) -> DeliveryResult:
        # The delivery span learns the attempt number here: only once the use case has loaded
        # the notification is it known, and this is the first traced code that sees it.
        trace.get_current_span().set_attribute(
            "notifyd.notification.attempt", notification.attempt_count
        )
        with self._tracer.start_as_current_span(
            f"{self.name} send",
            kind=SpanKind.CLIENT,
            attributes={
                "notifyd.provider": self.name,
                "notifyd.channel": self.channel.value,
                "notifyd.notification.id": notification.id,
                "notifyd.notification.attempt": notification.attempt_count,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result = await self._inner.send(notification)
            except DeliveryFailed as failure:
                span.set_attribute("notifyd.outcome", "failed")
                span.set_attribute("error.type", failure.error_class.value)
                if failure.rejection is not None:
                    span.set_attribute("notifyd.address_rejection", str(failure.rejection))
                span.set_status(Status(StatusCode.ERROR, mask(failure.message)))
                raise
            except Exception as error:
                span.set_attribute("notifyd.outcome", "error")
                span.set_attribute("error.type", type(error).__qualname__)
                span.set_status(Status(StatusCode.ERROR, mask(str(error))))
                raise
            span.set_attribute("notifyd.outcome", "accepted")
            if result.provider_message_id:
                span.set_attribute("notifyd.provider_message_id", result.provider_message_id)
            return result
