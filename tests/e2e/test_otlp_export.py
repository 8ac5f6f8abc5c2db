"""The real process exports its traces over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set:
a tiny collector decodes what arrives (protobuf), and one notification is one trace from the
RPC through the queue to the provider. Runs `notifyd dev` (its own Postgres and Redis), so its
worker cannot take the shared e2e queue."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from interfaces.grpc.gen.notify.v1 import notification_pb2 as pb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as svc_grpc
from tests.e2e.harness import NOTIFYD, remember_log
from tests.e2e.helpers import eventually

pytestmark = pytest.mark.e2e

DEV_KEY = "nfy_dev_otlp_0123456789abcdef"
RPC = "notify.v1.NotificationService/SendNotification"


class Collector:
    """An OTLP/HTTP traces endpoint: POST /v1/traces with an ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, str], Span]] = []
        self.headers: list[dict[str, str]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                collector.headers.append({k.lower(): v for k, v in self.headers.items()})
                for resource_spans in request.resource_spans:
                    resource = {
                        a.key: a.value.string_value for a in resource_spans.resource.attributes
                    }
                    for scope_spans in resource_spans.scope_spans:
                        collector.spans += [(resource, s) for s in scope_spans.spans]
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    collector = Collector()
    yield collector
    collector.close()


def _start_dev(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    log_path = tmp_path / "notifyd-otlp.log"
    remember_log(log_path)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*NOTIFYD, "dev", "--data-dir", str(tmp_path / "var")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    address = ""
    deadline = time.monotonic() + 60
    assert process.stdout is not None
    while not address and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if m := re.search(r"listening on (\S+)", line):
            address = m.group(1)
    if not address:
        process.kill()
        pytest.fail(f"notifyd dev did not start:\n{log_path.read_text()}")
    threading.Thread(target=lambda: [None for _ in process.stdout or []], daemon=True).start()
    return process, address


def _attributes(span: Span) -> dict[str, object]:
    found: dict[str, object] = {}
    for a in span.attributes:
        kind = a.value.WhichOneof("value")
        found[a.key] = getattr(a.value, kind) if kind else None
    return found


def test_a_notification_is_exported_as_one_trace(collector: Collector, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "NOTIFYD_LISTEN": "127.0.0.1:0",
        "NOTIFYD_METRICS_LISTEN": "127.0.0.1:0",
        "NOTIFYD_DEV_API_KEY": DEV_KEY,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_EXPORTER_OTLP_HEADERS": "x-collector-tenant=e2e",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=e2e",
        # Export within a tenth of a second rather than the default five.
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    for name in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_SERVICE_NAME"):
        env.pop(name, None)
    process, address = _start_dev(tmp_path, env)
    try:
        metadata = (("authorization", f"Bearer {DEV_KEY}"),)
        with grpc.insecure_channel(address) as channel:
            stub = svc_grpc.NotificationServiceStub(channel)
            template = pb.TemplateReference(name="welcome", locale="en")
            template.variables.update({"name": "Ada"})
            sent = stub.SendNotification(
                svc.SendNotificationRequest(
                    request_id=f"otlp-{uuid.uuid4()}",
                    user_id="u-otlp",
                    channel=pb.CHANNEL_IN_APP,
                    category="welcome",
                    template=template,
                ),
                metadata=metadata,
            ).notification

            def of_this_notification() -> dict[str, Span]:
                by_name = {span.name: span for _, span in collector.spans}
                provider = by_name.get("inbox send")
                if (
                    provider is None
                    or _attributes(provider).get("notifyd.notification.id") != sent.id
                ):
                    return {}
                return {n: s for n, s in by_name.items() if s.trace_id == provider.trace_id}

            spans = eventually(
                of_this_notification,
                lambda found: {RPC, "enqueue notification", "deliver notification"} <= set(found),
            )
            # A refused call: its log line carries the trace id of its span.
            request_id = f"otlp-refused-{uuid.uuid4()}"
            with pytest.raises(grpc.RpcError):
                stub.SendNotification(
                    svc.SendNotificationRequest(request_id="r", user_id="u"),
                    metadata=(*metadata, ("x-request-id", request_id)),
                )
            refused = eventually(
                lambda: [
                    s
                    for _, s in collector.spans
                    if s.name == RPC and _attributes(s)["rpc.grpc.status_code"] == 3
                ],
                lambda found: len(found) == 1,
            )[0]
    finally:
        process.terminate()
        code = process.wait(30)
    assert code == 0
    [logged] = [
        json.loads(line)
        for line in (tmp_path / "notifyd-otlp.log").read_text().splitlines()
        if request_id in line
    ]
    assert logged["trace_id"] == refused.trace_id.hex()
    assert logged["span_id"] == refused.span_id.hex()
    assert "INVALID_ARGUMENT" in logged["message"]

    rpc, enqueue = spans[RPC], spans["enqueue notification"]
    deliver, provider = spans["deliver notification"], spans["inbox send"]
    assert rpc.kind == Span.SPAN_KIND_SERVER
    assert rpc.parent_span_id == b""
    assert enqueue.parent_span_id == rpc.span_id
    assert deliver.parent_span_id == enqueue.span_id
    assert provider.parent_span_id == deliver.span_id
    assert _attributes(deliver)["notifyd.notification.status"] == "DELIVERED"
    assert _attributes(provider)["notifyd.outcome"] == "accepted"

    resource = next(r for r, s in collector.spans if s.span_id == rpc.span_id)
    assert resource["service.name"] == "notifyd"
    assert resource["deployment.environment"] == "e2e"
    assert all(h.get("x-collector-tenant") == "e2e" for h in collector.headers)
    assert all(h.get("content-type") == "application/x-protobuf" for h in collector.headers)
