"""Tracing is configured by the standard OTEL_* variables and off unless they ask for it; the
trace context survives its trip through Redis as text; the queue and provider wrappers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import SpanKind, StatusCode

from application.ports.scheduler import Claim, QueueItem
from application.ports.sender import DeliveryFailed
from domain.notification import Channel, DeliveryResult, ErrorClass, Notification, Priority
from infrastructure.config import ConfigError
from infrastructure.telemetry.tracing import (
    EnqueueSpans,
    ProviderSpans,
    Tracing,
    build_tracer_provider,
    exporter_names,
)
from tests.unit.application.fakes import make_notification

T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


def _exporters(provider: TracerProvider) -> list[object]:
    # The SDK keeps its processors here; each BatchSpanProcessor holds one exporter.
    processors = provider._active_span_processor._span_processors
    return [p.span_exporter for p in processors]  # type: ignore[attr-defined]


@pytest.fixture
def built() -> Iterator[list[TracerProvider]]:
    providers: list[TracerProvider] = []
    yield providers
    for provider in providers:
        provider.shutdown()


# -- configuration ----------------------------------------------------------------------------


def test_off_when_nothing_is_configured() -> None:
    assert exporter_names(os.environ) == []
    assert build_tracer_provider() is None
    assert not Tracing().enabled


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": " OTLP , console,otlp"}, ["otlp", "console"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "false"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": ""}, []),
    ],
)
def test_which_exporters_the_environment_asks_for(env: dict[str, str], expected: list[str]) -> None:
    assert exporter_names(env) == expected


def test_otlp_endpoint_alone_turns_tracing_on_over_http(
    monkeypatch: pytest.MonkeyPatch, built: list[TracerProvider]
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    provider = build_tracer_provider()
    assert provider is not None
    built.append(provider)

    [exporter] = _exporters(provider)
    assert isinstance(exporter, OTLPSpanExporter)
    # The exporter's own environment handling: the endpoint plus the traces path.
    assert exporter._endpoint == "http://127.0.0.1:4318/v1/traces"


def test_traces_endpoint_is_used_as_given(
    monkeypatch: pytest.MonkeyPatch, built: list[TracerProvider]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp,console")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/custom")
    provider = build_tracer_provider()
    assert provider is not None
    built.append(provider)

    otlp, console = _exporters(provider)
    assert isinstance(otlp, OTLPSpanExporter)
    assert otlp._endpoint == "http://127.0.0.1:9/custom"
    assert isinstance(console, ConsoleSpanExporter)


def test_service_name_defaults_to_notifyd(
    monkeypatch: pytest.MonkeyPatch, built: list[TracerProvider]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging")
    provider = build_tracer_provider()
    assert provider is not None
    built.append(provider)

    assert provider.resource.attributes["service.name"] == "notifyd"
    assert provider.resource.attributes["deployment.environment"] == "staging"


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_SERVICE_NAME": "notifyd-eu"},
        {"OTEL_RESOURCE_ATTRIBUTES": "service.name=notifyd-eu"},
    ],
)
def test_service_name_from_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, built: list[TracerProvider], env: dict[str, str]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    provider = build_tracer_provider()
    assert provider is not None
    built.append(provider)

    assert provider.resource.attributes["service.name"] == "notifyd-eu"


def test_the_sampler_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, built: list[TracerProvider]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    provider = build_tracer_provider()
    assert provider is not None
    built.append(provider)

    assert isinstance(provider.sampler, ParentBased)
    assert "0.25" in provider.sampler.get_description()


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "no trace exporter 'zipkin'"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "http/protobuf only",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json",
            },
            "http/protobuf only",
        ),
    ],
)
def test_an_exporter_that_is_not_installed_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], complaint: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=complaint):
        build_tracer_provider()


# -- the context across Redis -----------------------------------------------------------------


@pytest.fixture
def exported() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracing(exported: InMemorySpanExporter) -> Tracing:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exported))
    return Tracing(provider)


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


def sampled(traceparent: str) -> bool:
    return bool(int(traceparent.rsplit("-", 1)[1], 16) & 1)


def claim(context: str = "") -> Claim:
    return Claim("n1", Priority.HIGH, 7, T0, trace_context=context)


def test_outside_any_span_there_is_no_context(tracing: Tracing) -> None:
    assert tracing.current_context() == ""


def test_a_delivery_continues_the_trace_of_the_enqueue(
    tracing: Tracing, exported: InMemorySpanExporter
) -> None:
    with tracing.tracer.start_as_current_span("enqueue") as enqueue:
        stored = tracing.current_context()
    context = enqueue.get_span_context()
    assert stored.startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")
    assert sampled(stored)

    with tracing.delivery_span(claim(stored)):
        pass

    deliver = by_name(exported.get_finished_spans())["deliver notification"]
    assert deliver.kind is SpanKind.CONSUMER
    assert deliver.context is not None
    assert deliver.parent is not None
    assert deliver.context.trace_id == context.trace_id
    assert deliver.parent.span_id == context.span_id
    assert deliver.attributes is not None
    assert deliver.attributes["notifyd.notification.id"] == "n1"
    assert deliver.attributes["notifyd.notification.priority"] == "HIGH"


def test_tracestate_travels_along(tracing: Tracing) -> None:
    stored = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\nvendor=abc"
    parent = trace.get_current_span(tracing.parent_context(stored)).get_span_context()
    assert parent.trace_state.get("vendor") == "abc"
    with trace.use_span(trace.NonRecordingSpan(parent)):
        assert tracing.current_context() == stored


@pytest.mark.parametrize("stored", ["", "garbage", "00-zz-yy-01"])
def test_without_a_readable_context_a_delivery_starts_a_trace(
    tracing: Tracing, exported: InMemorySpanExporter, stored: str
) -> None:
    with (
        tracing.tracer.start_as_current_span("unrelated work in the worker"),
        tracing.delivery_span(claim(stored)),
    ):
        pass

    deliver = by_name(exported.get_finished_spans())["deliver notification"]
    # Never the child of whatever happened to be current in the worker.
    assert deliver.parent is None


def test_a_failed_delivery_records_the_masked_message_and_no_stack(
    tracing: Tracing, exported: InMemorySpanExporter
) -> None:
    def fail() -> None:
        try:
            raise KeyError("api_key=s3cr3t")
        except KeyError as cause:
            raise RuntimeError("bounced: ada@example.com") from cause

    with pytest.raises(RuntimeError), tracing.delivery_span(claim()):
        fail()

    deliver = by_name(exported.get_finished_spans())["deliver notification"]
    [event] = deliver.events
    assert event.name == "exception"
    assert dict(event.attributes or {}) == {
        "exception.type": "RuntimeError",
        "exception.message": "bounced: ***@example.com",
    }
    assert deliver.status.status_code is StatusCode.ERROR
    assert deliver.status.description == "RuntimeError: bounced: ***@example.com"


def test_disabled_tracing_leaves_every_component_untraced() -> None:
    off = Tracing()
    sentinel = object()
    assert off.context_source is None
    assert off.server_tracer is None
    assert off.delivery_spans is None
    assert off.traced_scheduler(sentinel) is sentinel  # type: ignore[arg-type]
    assert off.traced_providers([sentinel]) == [sentinel]  # type: ignore[list-item]


def test_a_sampled_out_trace_still_carries_its_context(exported: InMemorySpanExporter) -> None:
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exported))
    tracing = Tracing(provider)
    with tracing.tracer.start_as_current_span("rpc"):
        stored = tracing.current_context()
    # Not sampled: the worker's span is not sampled either, and nothing is exported.
    assert stored
    assert not sampled(stored)
    with tracing.delivery_span(claim(stored)):
        pass
    assert exported.get_finished_spans() == ()


# -- the wrappers -----------------------------------------------------------------------------


class RecordingScheduler:
    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing
        self.contexts: list[str] = []

    async def enqueue(self, items: list[QueueItem], now: datetime) -> None:
        self.contexts.append(self.tracing.current_context())


async def test_enqueue_is_a_producer_span_and_its_context_is_the_one_stored(
    tracing: Tracing, exported: InMemorySpanExporter
) -> None:
    inner = RecordingScheduler(tracing)
    scheduler = EnqueueSpans(inner, tracing.tracer)  # type: ignore[arg-type]
    with tracing.tracer.start_as_current_span("rpc"):
        await scheduler.enqueue([QueueItem("n1", Priority.LOW, T0)], T0)

    spans = by_name(exported.get_finished_spans())
    enqueue, rpc = spans["enqueue notification"], spans["rpc"]
    assert enqueue.kind is SpanKind.PRODUCER
    assert enqueue.parent is not None
    assert rpc.context is not None
    assert enqueue.parent.span_id == rpc.context.span_id
    assert enqueue.context is not None
    [stored] = inner.contexts
    assert stored.startswith(f"00-{rpc.context.trace_id:032x}-{enqueue.context.span_id:016x}-")


class FakeProvider:
    name = "twilio"
    channel = Channel.SMS

    def __init__(self, outcome: DeliveryResult | Exception) -> None:
        self.outcome = outcome

    async def send(self, notification: Notification) -> DeliveryResult:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def _notification() -> Notification:
    return make_notification("n1", channel=Channel.EMAIL)


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (
            DeliveryResult("twilio", "SM123"),
            {"notifyd.outcome": "accepted", "notifyd.provider_message_id": "SM123"},
        ),
        (
            DeliveryFailed(
                ErrorClass.PERMANENT, "+14155550123 is not reachable", provider="twilio"
            ),
            {"notifyd.outcome": "failed", "error.type": "PERMANENT"},
        ),
        (RuntimeError("bug"), {"notifyd.outcome": "error", "error.type": "RuntimeError"}),
    ],
)
async def test_each_provider_request_is_a_client_span(
    tracing: Tracing,
    exported: InMemorySpanExporter,
    outcome: DeliveryResult | Exception,
    expected: dict[str, str],
) -> None:
    provider = ProviderSpans(FakeProvider(outcome), tracing.tracer)
    assert (provider.name, provider.channel) == ("twilio", Channel.SMS)
    with tracing.tracer.start_as_current_span("deliver notification"):
        if isinstance(outcome, Exception):
            with pytest.raises(type(outcome)):
                await provider.send(_notification())
        else:
            assert await provider.send(_notification()) is outcome

    spans = by_name(exported.get_finished_spans())
    span, deliver = spans["twilio send"], spans["deliver notification"]
    assert span.kind is SpanKind.CLIENT
    assert span.parent is not None
    assert deliver.context is not None
    assert span.parent.span_id == deliver.context.span_id
    assert span.attributes is not None
    assert span.attributes["notifyd.provider"] == "twilio"
    assert span.attributes["notifyd.channel"] == "SMS"
    assert {k: span.attributes.get(k) for k in expected} == expected
    failed = not isinstance(outcome, DeliveryResult)
    assert (span.status.status_code is StatusCode.ERROR) is failed
    # The status description is masked like a log line.
    assert "14155550123" not in (span.status.description or "")
    assert deliver.attributes is not None
    assert deliver.attributes["notifyd.notification.attempt"] == 0
