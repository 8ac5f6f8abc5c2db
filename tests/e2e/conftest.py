"""The real notifyd process (API + worker) on real Postgres and Redis, and its callers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from infrastructure.embedded import EmbeddedPostgres, EmbeddedRedis
from infrastructure.persistence.migrations_runner import upgrade_to_head
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as svc_grpc
from tests.e2e.harness import (
    E2E_DATABASE,
    NOTIFYD,
    Caller,
    Notifyd,
    WebhookReceiver,
    remember_log,
)


@pytest.fixture(scope="session")
def e2e_servers(servers_dir: Path) -> Iterator[tuple[EmbeddedPostgres, EmbeddedRedis]]:
    # Own servers, so integration tests that truncate tables cannot disturb the running process.
    with (
        EmbeddedPostgres(servers_dir / "e2e-pg", database=E2E_DATABASE) as pg,
        EmbeddedRedis(servers_dir / "e2e-redis") as redis_server,
    ):
        upgrade_to_head(pg.sqlalchemy_url())
        yield pg, redis_server


TITLE = "Order {{ order_id }} shipped"
BODY = "Hi {{ name }}, it is on its way."
# A CreateTemplateRequest in JSON, as `notifyd templates put --file` takes it.
ORDER_SHIPPED = {
    "default_locale": "en",
    "variables": [
        {"name": "order_id", "type": "VARIABLE_TYPE_STRING", "required": True},
        {"name": "name", "type": "VARIABLE_TYPE_STRING", "required": True},
    ],
    "contents": [
        {
            "locale": "en",
            "email": {"subject": TITLE, "text": BODY},
            "sms": {"text": BODY},
            "push": {"title": TITLE, "body": BODY},
            "in_app": {"title": TITLE, "body": BODY},
            "webhook": {"payload": {"title": TITLE, "body": BODY}},
        }
    ],
}


@pytest.fixture(scope="session")
def notifyd(
    e2e_servers: tuple[EmbeddedPostgres, EmbeddedRedis], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Notifyd]:
    pg, redis_server = e2e_servers
    sandbox_dir = tmp_path_factory.mktemp("sandbox")
    env = {
        **os.environ,
        "NOTIFYD_DATABASE_URL": pg.sqlalchemy_url(),
        "NOTIFYD_REDIS_URL": redis_server.url,
        # The test's webhook receiver is on loopback.
        "NOTIFYD_ALLOW_PRIVATE_TARGETS": "true",
        "NOTIFYD_RETRY_BASE_SECONDS": "0.2",
        "NOTIFYD_RETRY_MAX_SECONDS": "1",
        "NOTIFYD_MAX_ATTEMPTS": "3",
        "NOTIFYD_WEBHOOK_TIMEOUT_SECONDS": "3",
        "NOTIFYD_POLL_INTERVAL_SECONDS": "0.02",
        # A sandbox peer for every channel (SMTP, Twilio, Vonage, FCM, APNs, webhook sink).
        "NOTIFYD_SANDBOX": "true",
        "NOTIFYD_SANDBOX_DIR": str(sandbox_dir),
        "NOTIFYD_PROVIDER_TIMEOUT_SECONDS": "3",
    }
    server = _start(env, pg, tmp_path_factory, sandbox_dir)
    server.callers["acme"] = server.issue_key("acme", "orders")
    server.callers["globex"] = server.issue_key("globex", "billing")
    template_file = tmp_path_factory.mktemp("templates") / "order_shipped.json"
    template_file.write_text(json.dumps(ORDER_SHIPPED))
    server.cli(
        "templates", "put", "order_shipped", "--tenant", "acme", "--file", str(template_file)
    )
    yield server
    _stop(server)


@pytest.fixture(scope="session")
def strict_notifyd(
    e2e_servers: tuple[EmbeddedPostgres, EmbeddedRedis], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Notifyd]:
    """A second API process configured as production runs: no sandbox (so only WEBHOOK and
    IN_APP have providers) and private webhook targets refused. API only: a worker here would
    take the main process's queue (and its reconciler would re-enqueue its notifications)."""
    pg, redis_server = e2e_servers
    env = {
        **os.environ,
        "NOTIFYD_DATABASE_URL": pg.sqlalchemy_url(),
        "NOTIFYD_REDIS_URL": redis_server.url,
    }
    for name in ("NOTIFYD_SANDBOX", "NOTIFYD_ALLOW_PRIVATE_TARGETS", "NOTIFYD_SMTP_URLS"):
        env.pop(name, None)
    server = _start(env, pg, tmp_path_factory, None, command="serve")
    server.callers["acme"] = server.issue_key("acme", "orders-strict")
    yield server
    _stop(server)


def _start(
    env: dict[str, str],
    pg: EmbeddedPostgres,
    tmp_path_factory: pytest.TempPathFactory,
    sandbox_dir: Path | None,
    command: str = "run",
) -> Notifyd:
    log_path = tmp_path_factory.mktemp("notifyd") / "notifyd.log"
    log = log_path.open("w")
    remember_log(log_path)
    # Port 0: several sessions (and the strict process) run side by side.
    env = {**env, "NOTIFYD_METRICS_LISTEN": "127.0.0.1:0"}
    process = subprocess.Popen(
        [*NOTIFYD, command, "--listen", "127.0.0.1:0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    address = ""
    sink_url = ""
    metrics_url = ""
    deadline = time.monotonic() + 30
    assert process.stdout is not None
    while time.monotonic() < deadline and not address:
        line = process.stdout.readline()
        if not line:
            break
        match = re.search(r"listening on (\S+)", line)
        if match:
            address = match.group(1)
        metrics = re.search(r"^metrics on (\S+)", line)
        if metrics:
            metrics_url = metrics.group(1)
        sink = re.search(r"^sandbox webhook\s+(https?://\S+)", line)
        if sink:
            sink_url = sink.group(1)
    if not address:
        process.kill()
        pytest.fail(f"notifyd did not start:\n{log_path.read_text()}")
    # Keep draining stdout so the process never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in process.stdout or []], daemon=True).start()
    return Notifyd(
        address,
        env,
        pg.uri(),
        process,
        log_path,
        sandbox_dir=sandbox_dir,
        sink_url=sink_url,
        log_file=log,
        metrics_url=metrics_url,
    )


def _stop(server: Notifyd) -> None:
    server.process.terminate()
    try:
        server.process.wait(15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise
    finally:
        if server.log_file is not None:
            server.log_file.close()


@pytest.fixture(scope="session")
def channel(notifyd: Notifyd) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(notifyd.address) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch


@pytest.fixture(scope="session")
def stub(channel: grpc.Channel) -> svc_grpc.NotificationServiceStub:
    return svc_grpc.NotificationServiceStub(channel)


@pytest.fixture
def acme(notifyd: Notifyd) -> Caller:
    return notifyd.callers["acme"]


@pytest.fixture
def globex(notifyd: Notifyd) -> Caller:
    return notifyd.callers["globex"]


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The log audit (test_zz_logs.py) reads what every other test made notifyd log: it runs
    # last, whatever other files sort after it.
    items.sort(key=lambda item: item.path.name == "test_zz_logs.py")
