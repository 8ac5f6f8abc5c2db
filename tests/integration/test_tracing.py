"""One trace per notification, from the RPC through Redis to the provider call, on the real
pieces in one process: the container over real Postgres and Redis, the gRPC server on port 0,
the worker loop, and a real HTTP webhook receiver. The only thing that joins the API's spans
to the worker's is the context the scheduler stored in Redis: the worker's delivery runs in a
task of its own, started by a claim."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from dependency_injector import providers
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import AsyncEngine

from infrastructure.config import Settings
from infrastructure.telemetry.tracing import Tracing
from interfaces.container import Container, close_clients
from interfaces.grpc.gen.notify.v1 import notification_pb2 as pb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as svc_grpc
from tests.integration.test_delivery_flow import Receiver

pytestmark = pytest.mark.integration

RPC = "notify.v1.NotificationService/SendNotification"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
WAIT_SECONDS = 15.0


@dataclass
class Running:
    stub: svc_grpc.NotificationServiceStub
    metadata: tuple[tuple[str, str], ...]
    receiver: Receiver
    exported: InMemorySpanExporter
    container: Container


@pytest.fixture
async def running(
    clean_db: AsyncEngine, redis_client: object, database_url: str, redis_url: str
) -> AsyncIterator[Running]:
    exported = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exported))
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        listen="127.0.0.1:0",
        # The receiver is on loopback.
        allow_private_targets=True,
        poll_interval_seconds=0.02,
        housekeeping_seconds=60,
    )
    container = Container(settings=settings)
    container.tracing.override(providers.Object(Tracing(provider)))
    issued = await container.create_api_key().execute("acme", "orders")
    receiver = Receiver(secret=issued.webhook_secret)
    await receiver.start()
    server = container.api_server()
    await server.start()
    stop = asyncio.Event()
    worker = asyncio.create_task(container.worker().run(stop, grace=5))
    channel = grpc.aio.insecure_channel(server.address)
    try:
        yield Running(
            svc_grpc.NotificationServiceStub(channel),
            (("authorization", f"Bearer {issued.key}"),),
            receiver,
            exported,
            container,
        )
    finally:
        await channel.close()
        stop.set()
        await worker
        await server.stop(1)
        await receiver.stop()
        await close_clients(container)
        provider.shutdown()


async def send_webhook(
    running: Running, metadata: tuple[tuple[str, str], ...] = ()
) -> pb.Notification:
    response = await running.stub.SendNotification(
        svc.SendNotificationRequest(
            request_id=f"trace-{uuid.uuid4()}",
            user_id="user-1",
            channel=pb.CHANNEL_WEBHOOK,
            category="order_shipped",
            content=pb.Content(title="Shipped", body="On its way"),
            address=pb.Address(webhook_url=running.receiver.url),
        ),
        metadata=(*running.metadata, *metadata),
    )
    return response.notification


async def wait_for_spans(
    exported: InMemorySpanExporter, notification_id: str
) -> list[ReadableSpan]:
    """The spans of one notification's trace, once its provider span has ended."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        spans = exported.get_finished_spans()
        provider = [
            s
            for s in spans
            if s.kind is SpanKind.CLIENT
            and (s.attributes or {}).get("notifyd.notification.id") == notification_id
        ]
        deliver = [s for s in spans if s.name == "deliver notification"]
        # The deliver span ends after the provider span, once the outcome is recorded.
        if provider and any(
            (d.attributes or {}).get("notifyd.notification.id") == notification_id for d in deliver
        ):
            assert provider[0].context is not None
            trace_id = provider[0].context.trace_id
            return [s for s in spans if s.context is not None and s.context.trace_id == trace_id]
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"no delivery of {notification_id} traced within {WAIT_SECONDS}s: "
        f"{[s.name for s in exported.get_finished_spans()]}"
    )


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{name}: {[s.name for s in spans]}"
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


async def test_one_trace_from_the_rpc_through_redis_to_the_provider(running: Running) -> None:
    sent = await send_webhook(running)
    spans = await wait_for_spans(running.exported, sent.id)

    rpc = one(spans, RPC)
    enqueue = one(spans, "enqueue notification")
    deliver = one(spans, "deliver notification")
    provider = one(spans, "webhook send")
    assert rpc.kind is SpanKind.SERVER
    assert enqueue.kind is SpanKind.PRODUCER
    assert deliver.kind is SpanKind.CONSUMER
    assert provider.kind is SpanKind.CLIENT
    # RPC -> enqueue -> deliver -> provider.
    assert rpc.parent is None
    assert parent_of(enqueue) == span_id(rpc)
    assert parent_of(deliver) == span_id(enqueue)
    assert parent_of(provider) == span_id(deliver)
    # The worker's side joined through Redis only: a remote parent.
    assert deliver.parent is not None
    assert deliver.parent.is_remote

    assert (rpc.attributes or {})["rpc.grpc.status_code"] == 0
    assert (enqueue.attributes or {})["notifyd.notification.id"] == sent.id
    deliver_attributes = deliver.attributes or {}
    assert deliver_attributes["notifyd.notification.id"] == sent.id
    assert deliver_attributes["notifyd.notification.priority"] == "MEDIUM"
    assert deliver_attributes["notifyd.notification.attempt"] == 1
    assert deliver_attributes["notifyd.notification.status"] == "SENT"
    provider_attributes = provider.attributes or {}
    assert provider_attributes["notifyd.provider"] == "webhook"
    assert provider_attributes["notifyd.channel"] == "WEBHOOK"
    assert provider_attributes["notifyd.outcome"] == "accepted"
    assert len(running.receiver.received) == 1

    # The stored context is dropped once the notification is settled.
    redis = running.container.redis()
    trace_key = running.container.scheduler().keys[9]
    assert not await redis.hexists(trace_key, sent.id)


async def test_two_notifications_are_two_traces(running: Running) -> None:
    first, second = await send_webhook(running), await send_webhook(running)
    traces = []
    for sent in (first, second):
        spans = await wait_for_spans(running.exported, sent.id)
        assert {s.name for s in spans} >= {RPC, "enqueue notification", "deliver notification"}
        traces.append({s.context.trace_id for s in spans if s.context is not None})
    assert len(traces[0]) == len(traces[1]) == 1
    assert traces[0] != traces[1]


async def test_the_callers_trace_is_continued(running: Running) -> None:
    traceparent = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"
    sent = await send_webhook(running, (("traceparent", traceparent),))
    spans = await wait_for_spans(running.exported, sent.id)

    rpc = one(spans, RPC)
    assert rpc.context is not None
    assert f"{rpc.context.trace_id:032x}" == CALLER_TRACE
    assert {s.name for s in spans} >= {"enqueue notification", "deliver notification"}
