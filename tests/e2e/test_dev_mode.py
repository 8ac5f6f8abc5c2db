"""`notifyd dev` (what `make run` starts): embedded servers, a dev key, a working API."""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import pytest

from interfaces.grpc.gen.notify.v1 import notification_pb2 as pb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as svc_grpc
from tests.e2e.harness import NOTIFYD, remember_log
from tests.e2e.helpers import eventually

pytestmark = pytest.mark.e2e

DEV_KEY = "nfy_dev_e2e_0123456789abcdef"


def test_dev_mode_starts_everything_and_serves(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "NOTIFYD_LISTEN": "127.0.0.1:0",
        "NOTIFYD_METRICS_LISTEN": "127.0.0.1:0",
        "NOTIFYD_DEV_API_KEY": DEV_KEY,
    }
    log_path = tmp_path / "notifyd-dev.log"
    remember_log(log_path)
    log = log_path.open("w")
    process = subprocess.Popen(
        [*NOTIFYD, "dev", "--data-dir", str(tmp_path / "var")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        printed: dict[str, str] = {}
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        while "address" not in printed and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            if m := re.search(r"dev API key:\s+(\S+)", line):
                printed["key"] = m.group(1)
            if m := re.search(r"dev webhook secret:\s+(whsec_\S+)", line):
                printed["secret"] = m.group(1)
            if m := re.search(r"listening on (\S+)", line):
                printed["address"] = m.group(1)
        assert printed.get("key") == DEV_KEY
        assert "secret" in printed
        assert "address" in printed, "dev mode did not start listening"
        assert (tmp_path / "var" / "postgres" / "PG_VERSION").exists()

        metadata = (("authorization", f"Bearer {DEV_KEY}"),)
        with grpc.insecure_channel(printed["address"]) as channel:
            stub = svc_grpc.NotificationServiceStub(channel)
            # The seeded "welcome" template renders in German for de-CH.
            template = pb.TemplateReference(name="welcome", locale="de-CH")
            template.variables.update({"name": "Ada"})
            sent = stub.SendNotification(
                svc.SendNotificationRequest(
                    request_id=f"dev-{uuid.uuid4()}",
                    user_id="u42",
                    channel=pb.CHANNEL_IN_APP,
                    category="welcome",
                    template=template,
                ),
                metadata=metadata,
            ).notification
            assert sent.content.title == "Willkommen, Ada!"
            count = eventually(
                lambda: (
                    stub.GetUnreadCount(
                        svc.GetUnreadCountRequest(user_id="u42"), metadata=metadata
                    ).unread_count
                ),
                lambda n: n == 1,
            )
            assert count == 1
    finally:
        process.terminate()
        code = process.wait(30)
        log.close()
    assert code == 0, "dev mode should stop cleanly on SIGTERM"
    # Stopping dev mode stops its embedded Postgres too.
    pid_file = tmp_path / "var" / "postgres" / "postmaster.pid"
    assert eventually(pid_file.exists, lambda exists: not exists, timeout=20) is False
