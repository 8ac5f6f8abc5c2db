"""The e2e harness: a handle on the notifyd process, its callers, and a webhook receiver."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import psycopg

NOTIFYD = [sys.executable, "-m", "interfaces.cli.main"]
E2E_DATABASE = "notifyd_e2e"

# What the log audit (test_zz_logs.py, run last) checks: every log a notifyd process or CLI
# call wrote in this session, and every API key and webhook secret notifyd handed out.
SESSION_LOGS: list[Path] = []
ISSUED_SECRETS: set[str] = set()
_SECRET = re.compile(r"\b(?:nfy_|whsec_)\S+")


def remember_log(path: Path) -> None:
    if path not in SESSION_LOGS:
        SESSION_LOGS.append(path)


@dataclass
class Caller:
    key: str
    tenant: str
    webhook_secret: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.key}"),)


@dataclass
class Notifyd:
    address: str
    env: dict[str, str]
    database_uri: str
    process: subprocess.Popen[str]
    log_path: Path
    callers: dict[str, Caller] = field(default_factory=dict)
    # The sandbox peers' journal directory, and where its webhook sink listens.
    sandbox_dir: Path | None = None
    sink_url: str = ""
    log_file: IO[str] | None = None
    # http://host:port/metrics, from the process' "metrics on" line.
    metrics_url: str = ""

    def journal(self, peer: str) -> list[dict[str, Any]]:
        """What the sandbox ``peer`` (smtp, twilio, vonage, fcm, apns, webhook) received."""
        assert self.sandbox_dir is not None, "this notifyd runs without sandbox peers"
        path = self.sandbox_dir / f"{peer}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*NOTIFYD, *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        ISSUED_SECRETS.update(_SECRET.findall(done.stdout))
        if done.stderr:
            cli_log = self.log_path.with_name("cli.log")
            with cli_log.open("a") as log:
                log.write(done.stderr)
            remember_log(cli_log)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def issue_key(self, tenant: str, service: str) -> Caller:
        out = self.cli("keys", "create", "--tenant", tenant, "--service", service)
        fields = dict(re.findall(r"^([a-z ]+):\s+(\S+)$", out, re.MULTILINE))
        return Caller(fields["api key"], fields["tenant"], fields["webhook secret"])

    def count_rows(self, tenant: str) -> int:
        with psycopg.connect(self.database_uri) as conn:
            row = conn.execute(
                "SELECT count(*) FROM notifications WHERE tenant_id = %s", (tenant,)
            ).fetchone()
            assert row is not None
            return int(row[0])


@dataclass
class ReceivedWebhook:
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    """A real HTTP server that records every POST; answers with a scripted status."""

    def __init__(self) -> None:
        self.received: list[ReceivedWebhook] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                receiver.received.append(
                    ReceivedWebhook({k.lower(): v for k, v in self.headers.items()}, body)
                )
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
