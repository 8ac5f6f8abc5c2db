"""What the composition root builds: bulk sends observed and traced like single ones, and no
metrics interceptor when metrics are off. Nothing connects: clients are built, never used."""

from __future__ import annotations

import pytest
from dependency_injector import providers
from opentelemetry.sdk.trace import TracerProvider

from infrastructure.config import Settings
from infrastructure.telemetry.metrics import DeliveryMetrics
from infrastructure.telemetry.tracing import EnqueueSpans, Tracing
from interfaces.container import Container
from interfaces.grpc.metrics_interceptor import MetricsInterceptor


def container(metrics_listen: str = "off") -> Container:
    built = Container(
        settings=Settings(
            metrics_listen=metrics_listen,
            redis_url="redis://127.0.0.1:1/0",
            database_url="postgresql://notifyd@127.0.0.1:1/notifyd",
        )
    )
    built.tracing.override(providers.Object(Tracing(TracerProvider(shutdown_on_exit=False))))
    return built


def test_bulk_send_counts_acceptances_and_traces_enqueues_like_a_single_send() -> None:
    c = container()
    bulk, single = c.bulk_send(), c.send_notification()
    assert isinstance(bulk._observer, DeliveryMetrics)
    assert bulk._observer is single._observer
    assert isinstance(bulk._scheduler, EnqueueSpans)


@pytest.mark.parametrize(("listen", "counted"), [("off", False), ("127.0.0.1:0", True)])
def test_the_metrics_interceptor_only_when_metrics_are_served(listen: str, counted: bool) -> None:
    observers = container(listen).api_server.kwargs["observers"]()
    assert any(isinstance(o, MetricsInterceptor) for o in observers) is counted
