"""Prometheus metrics: the families notifyd exposes, the adapters that feed them, and the HTTP
endpoint that serves them.

One ``Metrics`` (one ``CollectorRegistry``) per process, never prometheus_client's global
default registry, so tests can build as many as they like side by side. The gRPC families
carry go-grpc-prometheus' names and labels, so its dashboards and alerts work unchanged.

Label values: channels and priorities in lower case (``webhook``, ``in_app``; ``low`` ..
``critical``), providers by their configured names (``smtp``, ``twilio``, ``webhook``, ``inbox``).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)
from prometheus_client.exposition import ThreadingWSGIServer

from application.ports.delivery_observer import (
    AcceptanceOutcome,
    AttemptResult,
    DeliveryOutcome,
)
from application.ports.scheduler import QueueStats
from application.ports.sender import BreakerState
from domain.notification import Channel, Priority

log = logging.getLogger(__name__)

# go-grpc-prometheus' default (Prometheus' DefBuckets).
RPC_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# From a prompt send (tens of ms) through retries with backoff (minutes) to long outages.
DELIVERY_BUCKETS: Final = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4 * 3600.0,
)

QUEUE_STATES: Final = ("ready", "delayed", "leased")
# The priority label of delayed/leased items a bounded snapshot did not attribute.
UNATTRIBUTED: Final = "unknown"
BREAKER_VALUES: Final = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


def channel_label(channel: Channel) -> str:
    return channel.value.lower()


def priority_label(priority: Priority) -> str:
    return priority.name.lower()


class Metrics:
    """Every metric family of one process, on its own registry."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, process_collectors: bool = True
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if process_collectors:
            # What the default registry would have had: CPU, memory, open fds, GC, version.
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

        rpc = ("grpc_type", "grpc_service", "grpc_method")
        self.grpc_started = Counter(
            "grpc_server_started_total", "RPCs started on the server.", rpc, registry=r
        )
        self.grpc_handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, whatever their status.",
            (*rpc, "grpc_code"),
            registry=r,
        )
        self.grpc_handling = Histogram(
            "grpc_server_handling_seconds",
            "Time from an RPC's start to its completion on the server.",
            rpc,
            buckets=RPC_BUCKETS,
            registry=r,
        )
        self.grpc_received = Counter(
            "grpc_server_msg_received_total", "Messages received by the server.", rpc, registry=r
        )
        self.grpc_sent = Counter(
            "grpc_server_msg_sent_total", "Messages sent by the server.", rpc, registry=r
        )

        self.accepted = Counter(
            "notifyd_notifications_accepted_total",
            "New notifications stored by the API, by what happened to them (queued, suppressed "
            "by a policy, deduplicated into an earlier one). Replayed requests are not new.",
            ("channel", "priority", "status"),
            registry=r,
        )
        self.attempts = Counter(
            "notifyd_delivery_attempts_total",
            "Delivery attempts as the notification's record has them, one per provider tried "
            "(a failover chain counts each), by how they ended (accepted, failed_over, "
            "transient, permanent, provider_down, maybe_accepted).",
            ("channel", "provider", "outcome"),
            registry=r,
        )
        self.handled = Counter(
            "notifyd_notifications_total",
            "Notifications a worker handled, by where that left them (sent, retry, fallback to "
            "the next channel, failed, expired); provider is the last one tried.",
            ("channel", "provider", "outcome"),
            registry=r,
        )
        self.latency = Histogram(
            "notifyd_delivery_latency_seconds",
            "From when a notification was due (its scheduled time, else its creation) to its "
            "acceptance by a provider, retries included.",
            ("channel", "provider"),
            buckets=DELIVERY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "notifyd_queue_depth",
            "Queued items by priority and state (ready: due, waiting for a worker; delayed: "
            'waiting for their due time; leased: being delivered). priority="unknown" holds '
            "delayed/leased items beyond what one snapshot attributes to a priority.",
            ("priority", "state"),
            registry=r,
        )
        self.queue_oldest_due_age = Gauge(
            "notifyd_queue_oldest_due_age_seconds",
            "How long the longest-waiting due item of each priority has been due (0: none).",
            ("priority",),
            registry=r,
        )
        self.breaker_state = Gauge(
            "notifyd_provider_breaker_state",
            "Circuit breaker per provider: 0 closed, 1 half-open, 2 open. Providers without a "
            "breaker (webhook endpoints, the inbox) are always 0.",
            ("provider",),
            registry=r,
        )
        self.refreshed = Gauge(
            "notifyd_gauges_refreshed_timestamp_seconds",
            "When the queue and breaker gauges were last read from Redis (unix time); they "
            "keep their last values while Redis cannot be read.",
            ("source",),
            registry=r,
        )

    # -- gauges -------------------------------------------------------------------------------

    def set_queue(self, stats: QueueStats) -> None:
        for priority, s in stats.by_priority.items():
            label = priority_label(priority)
            self.queue_depth.labels(label, "ready").set(s.ready)
            self.queue_depth.labels(label, "delayed").set(s.delayed)
            self.queue_depth.labels(label, "leased").set(s.leased)
            self.queue_oldest_due_age.labels(label).set(s.oldest_due_age.total_seconds())
        if stats.unattributed_delayed or stats.unattributed_leased:
            self.queue_depth.labels(UNATTRIBUTED, "delayed").set(stats.unattributed_delayed)
            self.queue_depth.labels(UNATTRIBUTED, "leased").set(stats.unattributed_leased)
        else:
            self._forget(self.queue_depth, [(UNATTRIBUTED, "delayed"), (UNATTRIBUTED, "leased")])
        self.refreshed.labels("queue").set_to_current_time()

    def set_breakers(self, states: dict[str, BreakerState]) -> None:
        for provider, state in states.items():
            self.breaker_state.labels(provider).set(BREAKER_VALUES[state])
        self.refreshed.labels("breakers").set_to_current_time()

    @staticmethod
    def _forget(gauge: Gauge, label_sets: Iterable[tuple[str, ...]]) -> None:
        for labels in label_sets:
            gauge.remove(*labels)  # absent label sets are ignored


class DeliveryMetrics:
    """The ``DeliveryObserver`` and ``AcceptanceObserver`` ports on ``Metrics``."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def attempt_finished(self, channel: Channel, provider: str, result: AttemptResult) -> None:
        self._m.attempts.labels(channel_label(channel), provider or "none", result.value).inc()

    def notification_handled(
        self,
        channel: Channel,
        provider: str,
        outcome: DeliveryOutcome,
        latency: timedelta | None = None,
    ) -> None:
        provider = provider or "none"
        self._m.handled.labels(channel_label(channel), provider, outcome.value).inc()
        if latency is not None:
            self._m.latency.labels(channel_label(channel), provider).observe(
                latency.total_seconds()
            )

    def notification_accepted(
        self, channel: Channel, priority: Priority, outcome: AcceptanceOutcome
    ) -> None:
        self._m.accepted.labels(
            channel_label(channel), priority_label(priority), outcome.value
        ).inc()


class GrpcServerMetrics:
    """What ``interfaces.grpc.metrics_interceptor.MetricsInterceptor`` records into."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def started(self, grpc_type: str, service: str, method: str) -> None:
        self._m.grpc_started.labels(grpc_type, service, method).inc()

    def received(self, grpc_type: str, service: str, method: str) -> None:
        self._m.grpc_received.labels(grpc_type, service, method).inc()

    def sent(self, grpc_type: str, service: str, method: str) -> None:
        self._m.grpc_sent.labels(grpc_type, service, method).inc()

    def handled(self, grpc_type: str, service: str, method: str, code: str, seconds: float) -> None:
        self._m.grpc_handled.labels(grpc_type, service, method, code).inc()
        self._m.grpc_handling.labels(grpc_type, service, method).observe(seconds)


# -- the HTTP endpoint ------------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


class MetricsServer:
    """prometheus_client's WSGI app behind a threading HTTP server (a daemon thread) on one
    registry; port 0 picks a free port. GET /metrics (any path, in fact) answers in the text
    format.

    Started here rather than with ``start_http_server``: that one polls for shutdown every
    0.5 s, which a stopping process would wait out on top of its drain."""

    POLL_SECONDS: Final = 0.05

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("_Server", (ThreadingWSGIServer,), {"address_family": family})
        self._server: WSGIServer = make_server(
            host, port, make_wsgi_app(registry), server_class, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": self.POLL_SECONDS},
            name="metrics-http",
            daemon=True,
        )
        self._thread.start()
        self.host = host
        self.port = int(self._server.server_port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
