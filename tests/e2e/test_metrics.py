"""Prometheus metrics scraped from the running notifyd's HTTP port after a flow: gRPC server
metrics (OK, INVALID_ARGUMENT, UNAUTHENTICATED), deliveries, latency, queue and breaker gauges.

Other e2e tests share the process, so counters are compared before and after, and only ever
required to have grown by at least what this test caused."""

from __future__ import annotations

import urllib.request
import uuid

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from interfaces.grpc.gen.notify.v1 import notification_pb2 as pb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as svc_grpc
from tests.e2e.harness import Caller, Notifyd, WebhookReceiver
from tests.e2e.helpers import eventually

pytestmark = pytest.mark.e2e

SERVICE = "notify.v1.NotificationService"
PRIORITIES = ("low", "medium", "high", "critical")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(notifyd: Notifyd) -> Samples:
    with urllib.request.urlopen(notifyd.metrics_url, timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def get(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def has(samples: Samples, name: str, **labels: str) -> bool:
    return (name, frozenset(labels.items())) in samples


def handled(code: str, method: str = "SendNotification") -> dict[str, str]:
    return {
        "grpc_type": "unary",
        "grpc_service": SERVICE,
        "grpc_method": method,
        "grpc_code": code,
    }


def rpc(method: str = "SendNotification") -> dict[str, str]:
    return {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": method}


def _send(
    stub: svc_grpc.NotificationServiceStub,
    caller: Caller | None,
    metadata: tuple[tuple[str, str], ...] | None = None,
    **fields: object,
) -> pb.Notification:
    request = svc.SendNotificationRequest(
        request_id=f"req-{uuid.uuid4()}",
        user_id=f"user-{uuid.uuid4()}",
        category="metrics",
        content=pb.Content(title="Hello", body="from the metrics test"),
        **fields,  # type: ignore[arg-type]
    )
    if metadata is None:
        assert caller is not None
        metadata = caller.metadata
    return stub.SendNotification(request, metadata=metadata).notification


def _status(
    stub: svc_grpc.NotificationServiceStub, caller: Caller, nid: str
) -> pb.NotificationStatus.ValueType:
    got = stub.GetNotification(svc.GetNotificationRequest(id=nid), metadata=caller.metadata)
    return got.notification.status


def test_the_metrics_port_answers_after_a_flow(
    notifyd: Notifyd,
    stub: svc_grpc.NotificationServiceStub,
    acme: Caller,
    webhook_receiver: WebhookReceiver,
) -> None:
    assert notifyd.metrics_url.startswith("http://127.0.0.1:"), "the 'metrics on' line"
    before = scrape(notifyd)

    hook = _send(
        stub,
        acme,
        channel=pb.CHANNEL_WEBHOOK,
        priority=pb.PRIORITY_HIGH,
        address=pb.Address(webhook_url=webhook_receiver.url),
    )
    inbox = _send(stub, acme, channel=pb.CHANNEL_IN_APP, priority=pb.PRIORITY_LOW)
    with pytest.raises(grpc.RpcError) as invalid:
        _send(stub, acme, channel=pb.CHANNEL_UNSPECIFIED)
    assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as refused:
        _send(stub, None, (("authorization", "Bearer nfy_not_a_key"),), channel=pb.CHANNEL_IN_APP)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED

    eventually(lambda: _status(stub, acme, hook.id), lambda s: s == pb.NOTIFICATION_STATUS_SENT)
    eventually(
        lambda: _status(stub, acme, inbox.id), lambda s: s == pb.NOTIFICATION_STATUS_DELIVERED
    )
    webhook_sent = {"channel": "webhook", "provider": "webhook", "outcome": "sent"}
    inbox_sent = {"channel": "in_app", "provider": "inbox", "outcome": "sent"}
    # The worker counts right after recording the outcome: allow it a moment past the status.
    after = eventually(
        lambda: scrape(notifyd),
        lambda s: (
            get(s, "notifyd_notifications_total", **webhook_sent)
            > get(before, "notifyd_notifications_total", **webhook_sent)
            and get(s, "notifyd_notifications_total", **inbox_sent)
            > get(before, "notifyd_notifications_total", **inbox_sent)
        ),
    )

    def grew(name: str, **labels: str) -> float:
        return get(after, name, **labels) - get(before, name, **labels)

    # gRPC server metrics: the two accepted, the refused and the unauthenticated call.
    assert grew("grpc_server_handled_total", **handled("OK")) >= 2
    assert grew("grpc_server_handled_total", **handled("INVALID_ARGUMENT")) >= 1
    assert grew("grpc_server_handled_total", **handled("UNAUTHENTICATED")) >= 1
    assert grew("grpc_server_started_total", **rpc()) >= 4
    assert grew("grpc_server_handling_seconds_count", **rpc()) >= 4
    assert get(after, "grpc_server_handling_seconds_bucket", **rpc(), le="+Inf") >= 4
    assert grew("grpc_server_msg_received_total", **rpc()) >= 4
    assert grew("grpc_server_msg_sent_total", **rpc()) >= 2
    assert grew("grpc_server_handled_total", **handled("OK", "GetNotification")) >= 2

    # Acceptances at the API and deliveries by the worker.
    accepted = "notifyd_notifications_accepted_total"
    assert grew(accepted, channel="webhook", priority="high", status="queued") >= 1
    assert grew(accepted, channel="in_app", priority="low", status="queued") >= 1
    assert grew("notifyd_notifications_total", **webhook_sent) >= 1
    assert grew("notifyd_notifications_total", **inbox_sent) >= 1
    attempts = "notifyd_delivery_attempts_total"
    assert grew(attempts, channel="webhook", provider="webhook", outcome="accepted") >= 1
    assert grew(attempts, channel="in_app", provider="inbox", outcome="accepted") >= 1
    latency = "notifyd_delivery_latency_seconds"
    assert grew(f"{latency}_count", channel="webhook", provider="webhook") >= 1
    assert grew(f"{latency}_count", channel="in_app", provider="inbox") >= 1
    assert get(after, f"{latency}_sum", channel="webhook", provider="webhook") > 0

    # Gauges refreshed from Redis: every priority and state, every provider's breaker.
    for priority in PRIORITIES:
        for state in ("ready", "delayed", "leased"):
            assert has(after, "notifyd_queue_depth", priority=priority, state=state)
            assert get(after, "notifyd_queue_depth", priority=priority, state=state) >= 0
        assert has(after, "notifyd_queue_oldest_due_age_seconds", priority=priority)
    for provider in ("webhook", "inbox", "smtp", "twilio", "vonage", "fcm", "apns"):
        assert has(after, "notifyd_provider_breaker_state", provider=provider), provider
    assert get(after, "notifyd_provider_breaker_state", provider="webhook") == 0
    assert has(after, "notifyd_gauges_refreshed_timestamp_seconds", source="queue")
    assert has(after, "process_resident_memory_bytes")


def test_a_permanent_failure_is_counted_as_failed(
    notifyd: Notifyd, stub: svc_grpc.NotificationServiceStub, acme: Caller
) -> None:
    """A webhook endpoint answering 410 Gone: one permanent attempt, the notification failed."""
    gone = WebhookReceiver()
    gone.statuses = [410]
    try:
        before = scrape(notifyd)
        n = _send(stub, acme, channel=pb.CHANNEL_WEBHOOK, address=pb.Address(webhook_url=gone.url))
        eventually(lambda: _status(stub, acme, n.id), lambda s: s == pb.NOTIFICATION_STATUS_FAILED)
        failed = {"channel": "webhook", "provider": "webhook", "outcome": "failed"}
        after = eventually(
            lambda: scrape(notifyd),
            lambda s: (
                get(s, "notifyd_notifications_total", **failed)
                > get(before, "notifyd_notifications_total", **failed)
            ),
        )
    finally:
        gone.close()
    permanent = {"channel": "webhook", "provider": "webhook", "outcome": "permanent"}
    attempts = "notifyd_delivery_attempts_total"
    assert get(after, attempts, **permanent) - get(before, attempts, **permanent) >= 1
