"""The Prometheus side: what the adapters write into the families, the Redis-backed gauges and
their refresher (Redis down keeps the last values), the HTTP exposition, the setting."""

from __future__ import annotations

import asyncio
import urllib.request
from datetime import datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from application.errors import Unavailable
from application.ports.delivery_observer import (
    AcceptanceOutcome,
    AttemptResult,
    DeliveryOutcome,
)
from application.ports.scheduler import PriorityStats, QueueItem, QueueStats
from application.ports.sender import BreakerState
from domain.notification import Channel, Priority
from infrastructure.config import ConfigError, Settings, host_port_or_off
from infrastructure.telemetry.gauges import GaugeRefresher
from infrastructure.telemetry.metrics import (
    DeliveryMetrics,
    GrpcServerMetrics,
    Metrics,
    MetricsServer,
)
from tests.unit.application.fakes import T0, FakeScheduler, FixedClock


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_each_metrics_has_its_own_registry_not_the_global_one() -> None:
    one, two = Metrics(), Metrics()
    DeliveryMetrics(one).attempt_finished(Channel.EMAIL, "smtp", AttemptResult.ACCEPTED)

    labels = {"channel": "email", "provider": "smtp", "outcome": "accepted"}
    assert value(one, "notifyd_delivery_attempts_total", **labels) == 1
    assert value(two, "notifyd_delivery_attempts_total", **labels) is None
    assert REGISTRY.get_sample_value("notifyd_delivery_attempts_total", labels) is None


def test_delivery_metrics_labels_and_latency() -> None:
    m = Metrics(process_collectors=False)
    observer = DeliveryMetrics(m)
    observer.attempt_finished(Channel.SMS, "twilio", AttemptResult.FAILED_OVER)
    observer.attempt_finished(Channel.SMS, "vonage", AttemptResult.ACCEPTED)
    observer.notification_handled(
        Channel.SMS, "vonage", DeliveryOutcome.SENT, timedelta(seconds=1.5)
    )
    observer.notification_handled(Channel.IN_APP, "", DeliveryOutcome.EXPIRED)
    observer.notification_accepted(Channel.IN_APP, Priority.CRITICAL, AcceptanceOutcome.QUEUED)

    attempts = "notifyd_delivery_attempts_total"
    assert value(m, attempts, channel="sms", provider="twilio", outcome="failed_over") == 1
    assert value(m, attempts, channel="sms", provider="vonage", outcome="accepted") == 1
    handled = "notifyd_notifications_total"
    assert value(m, handled, channel="sms", provider="vonage", outcome="sent") == 1
    assert value(m, handled, channel="in_app", provider="none", outcome="expired") == 1
    latency = "notifyd_delivery_latency_seconds"
    assert value(m, f"{latency}_count", channel="sms", provider="vonage") == 1
    assert value(m, f"{latency}_sum", channel="sms", provider="vonage") == 1.5
    assert value(m, f"{latency}_bucket", channel="sms", provider="vonage", le="1.0") == 0
    assert value(m, f"{latency}_bucket", channel="sms", provider="vonage", le="2.5") == 1
    assert value(m, f"{latency}_count", channel="in_app", provider="none") is None
    accepted = "notifyd_notifications_accepted_total"
    assert value(m, accepted, channel="in_app", priority="critical", status="queued") == 1


def test_grpc_families_carry_the_go_grpc_prometheus_labels() -> None:
    m = Metrics(process_collectors=False)
    rpc = GrpcServerMetrics(m)
    labels = ("unary", "notify.v1.NotificationService", "SendNotification")
    rpc.started(*labels)
    rpc.received(*labels)
    rpc.handled(*labels, "INVALID_ARGUMENT", 0.02)
    names = dict(zip(("grpc_type", "grpc_service", "grpc_method"), labels, strict=True))

    assert value(m, "grpc_server_started_total", **names) == 1
    assert value(m, "grpc_server_msg_received_total", **names) == 1
    assert value(m, "grpc_server_msg_sent_total", **names) is None
    assert value(m, "grpc_server_handled_total", **names, grpc_code="INVALID_ARGUMENT") == 1
    assert value(m, "grpc_server_handling_seconds_count", **names) == 1
    assert value(m, "grpc_server_handling_seconds_bucket", **names, le="0.025") == 1


def test_queue_gauges_per_priority_and_state() -> None:
    m = Metrics(process_collectors=False)
    stats = {p: PriorityStats() for p in Priority}
    stats[Priority.HIGH] = PriorityStats(3, 2, 1, timedelta(seconds=7))
    m.set_queue(QueueStats(stats, unattributed_delayed=5))

    assert value(m, "notifyd_queue_depth", priority="high", state="ready") == 3
    assert value(m, "notifyd_queue_depth", priority="high", state="delayed") == 2
    assert value(m, "notifyd_queue_depth", priority="high", state="leased") == 1
    assert value(m, "notifyd_queue_depth", priority="low", state="ready") == 0
    assert value(m, "notifyd_queue_oldest_due_age_seconds", priority="high") == 7
    assert value(m, "notifyd_queue_depth", priority="unknown", state="delayed") == 5

    m.set_queue(QueueStats(stats))
    assert value(m, "notifyd_queue_depth", priority="unknown", state="delayed") is None


class FakeBreaker:
    def __init__(self, states: dict[str, BreakerState]) -> None:
        self.states = states
        self.down = False

    async def state(self, provider: str, now: datetime) -> BreakerState:
        if self.down:
            raise Unavailable("redis", "connection refused")
        return self.states[provider]


class DownScheduler(FakeScheduler):
    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def stats(self, now: datetime) -> QueueStats:
        if self.down:
            raise Unavailable("redis", "connection refused")
        return await super().stats(now)


async def test_refresher_reads_redis_and_keeps_the_last_values_while_it_is_down() -> None:
    m = Metrics(process_collectors=False)
    clock = FixedClock(T0)
    scheduler = DownScheduler()
    await scheduler.enqueue(
        [
            QueueItem("a", Priority.HIGH, T0 - timedelta(seconds=4)),
            QueueItem("b", Priority.LOW, T0 + timedelta(minutes=5)),
        ],
        T0,
    )
    breaker = FakeBreaker({"twilio": BreakerState.OPEN, "vonage": BreakerState.HALF_OPEN})
    refresher = GaugeRefresher(
        m,
        scheduler,
        clock,
        breaker=breaker,  # type: ignore[arg-type]
        guarded=["twilio", "vonage"],
        unguarded=["webhook", "inbox"],
    )
    assert value(m, "notifyd_provider_breaker_state", provider="webhook") == 0

    await refresher.refresh()

    assert value(m, "notifyd_queue_depth", priority="high", state="ready") == 1
    assert value(m, "notifyd_queue_depth", priority="low", state="delayed") == 1
    assert value(m, "notifyd_queue_oldest_due_age_seconds", priority="high") == 4
    assert value(m, "notifyd_provider_breaker_state", provider="twilio") == 2
    assert value(m, "notifyd_provider_breaker_state", provider="vonage") == 1
    assert value(m, "notifyd_provider_breaker_state", provider="inbox") == 0
    stamp = value(m, "notifyd_gauges_refreshed_timestamp_seconds", source="queue")
    assert stamp is not None

    scheduler.down = breaker.down = True
    await scheduler.enqueue([QueueItem("c", Priority.HIGH, T0)], T0)
    await asyncio.sleep(0.01)  # a refresh that succeeded would move the timestamp
    await refresher.refresh()  # must not raise

    assert value(m, "notifyd_queue_depth", priority="high", state="ready") == 1, "last value"
    assert value(m, "notifyd_provider_breaker_state", provider="twilio") == 2
    assert value(m, "notifyd_gauges_refreshed_timestamp_seconds", source="queue") == stamp


async def test_refresher_runs_until_stopped() -> None:
    m = Metrics(process_collectors=False)
    scheduler = FakeScheduler()
    stop = asyncio.Event()
    task = asyncio.create_task(
        GaugeRefresher(m, scheduler, FixedClock(T0), interval=0.01).run(stop)
    )
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 1)
    assert scheduler.calls.count("stats") >= 2


def test_exposition_over_http_in_the_text_format() -> None:
    m = Metrics()
    GrpcServerMetrics(m).handled("unary", "svc", "Method", "OK", 0.1)
    server = MetricsServer(m.registry, "127.0.0.1", 0)
    try:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(server.url, timeout=5) as response:
            assert response.status == 200
            body = response.read().decode()
    finally:
        server.stop()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    [sample] = [s for s in families["grpc_server_handled"].samples if s.name.endswith("_total")]
    assert sample.labels == {
        "grpc_type": "unary",
        "grpc_service": "svc",
        "grpc_method": "Method",
        "grpc_code": "OK",
    }
    assert sample.value == 1
    assert "process_cpu_seconds" in families, "process collectors are on the registry"


def test_ipv6_url_is_bracketed() -> None:
    server = MetricsServer(Metrics(process_collectors=False).registry, "::1", 0)
    try:
        assert server.url == f"http://[::1]:{server.port}/metrics"
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:9464", ("::1", 9464)),
        ("off", None),
        ("OFF", None),
    ],
)
def test_metrics_listen_values(raw: str, parsed: tuple[str, int] | None) -> None:
    assert host_port_or_off(raw) == parsed
    assert Settings.from_env({"NOTIFYD_METRICS_LISTEN": raw}).metrics_address() == parsed


def test_metrics_listen_default_and_bad_values() -> None:
    assert Settings.from_env({}).metrics_address() == ("127.0.0.1", 9464)
    for bad in ("9464", "localhost", "host:port", "127.0.0.1:70000", ""):
        with pytest.raises(ConfigError, match="NOTIFYD_METRICS_LISTEN"):
            Settings.from_env({"NOTIFYD_METRICS_LISTEN": bad})
