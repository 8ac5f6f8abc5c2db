"""The benchmark scenarios. Each run starts a fresh stack (Postgres, Redis, notifyd API and
worker processes, the webhook sink) and returns its figures; resource figures (peak RSS, CPU
per delivery) are read from the notifyd processes before they stop."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import redis
from google.protobuf.timestamp_pb2 import Timestamp

from bench.stack import Stack
from bench.stats import percentile
from infrastructure.config import Settings
from interfaces.grpc.gen.notify.v1 import notification_pb2 as pb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as svc_grpc

Figures = dict[str, float]
# The stack runs notifyd with the default Redis namespace.
DEFAULT_NAMESPACE = Settings().redis_namespace


@dataclass(frozen=True)
class Sizes:
    seconds: float = 10.0
    concurrency: int = 64
    load_processes: int = 1
    bulk_concurrency: int = 2
    deliveries: int = 100_000
    scheduled: int = 50_000
    api_processes: int = 2
    workers: int = 2
    connections: int = 8


@contextmanager
def _stack(sizes: Sizes, *, with_workers: bool) -> Iterator[Stack]:
    stack = Stack(
        api_processes=sizes.api_processes, workers=sizes.workers, connections=sizes.connections
    )
    try:
        yield stack.start(with_workers=with_workers)
    finally:
        stack.stop()


def _rss(stack: Stack) -> Figures:
    return {f"peak_rss_{role}_mb": mb for role, mb in stack.peak_rss_mb().items()}


def _latency_figures(latencies: list[float], prefix: str = "latency") -> Figures:
    return {
        f"{prefix}_p50_ms": percentile(latencies, 50),
        f"{prefix}_p95_ms": percentile(latencies, 95),
        f"{prefix}_p99_ms": percentile(latencies, 99),
        f"{prefix}_max_ms": max(latencies) if latencies else float("nan"),
    }


def _window(results: list[dict[str, Any]]) -> float:
    """Seconds from the first process's start of work to the last one's end."""
    return float(max(r["t1"] for r in results) - min(r["t0"] for r in results))


def _merge(results: list[dict[str, Any]]) -> tuple[int, int, float, list[float], Counter[str]]:
    ok = sum(r["ok"] for r in results)
    recipients = sum(r["recipients"] for r in results)
    elapsed = _window(results)
    latencies = [x for r in results for x in r["latencies_ms"]]
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
    return ok, recipients, elapsed, latencies, errors


def _queued_everywhere(stack: Stack) -> tuple[int, int]:
    """(rows in Postgres, items in Redis' queues): what "accepted" must have written."""
    assert stack.postgres is not None
    assert stack.redis is not None
    with psycopg.connect(stack.postgres.uri()) as conn:
        row = conn.execute("SELECT count(*) FROM notifications").fetchone()
    client = redis.Redis.from_url(stack.redis.url)
    try:
        queued = sum(
            int(client.zcard(key))
            for key in client.scan_iter(count=1000)
            if client.type(key) == b"zset"
        )
    finally:
        client.close()
    return (row[0] if row else 0), queued


def _spent(stack: Stack, before: Figures, loads: list[dict[str, Any]]) -> Figures:
    """CPU seconds each part of the stack spent since ``before``, the load generators' own
    included."""
    after = stack.cpu_by_role()
    spent = {role: after[role] - before[role] for role in after}
    spent["loadgen"] = sum(r["cpu_s"] for r in loads)
    return spent


def _cpu_figures(
    spent: Figures, elapsed: float, units: int, unit: str, roles: tuple[str, ...]
) -> Figures:
    """CPU per unit of work of the parts named in ``roles``, of the rest (parts idle in this
    scenario) and of everything together, and the cores kept busy over the ``elapsed`` the
    work took: close to the box's core count, the throughput beside it is what the CPU allows,
    and each part's share says where it goes."""
    per_unit = 1000 / max(units, 1)
    total = sum(spent.values())
    listed = sum(spent[role] for role in roles)
    return {
        **{f"cpu_ms_per_{unit}_{role}": spent[role] * per_unit for role in roles},
        f"cpu_ms_per_{unit}_other": (total - listed) * per_unit,
        f"cpu_ms_per_{unit}": total * per_unit,
        "cores_busy": total / elapsed,
    }


# The parts of the stack that work on an API call.
_API_ROLES = ("api", "postgres", "redis", "loadgen")


def _closed_loop(
    stack: Stack, sizes: Sizes, mode: str, address: str | None = None
) -> tuple[list[dict[str, Any]], Figures]:
    """A one-second warm-up, then ``concurrency`` calls always in flight from each of
    ``load_processes`` generators for ``seconds``: their results, and the CPU each part of the
    stack spent meanwhile."""
    stack.load(mode, seconds=1, concurrency=sizes.concurrency, address=address)
    before = stack.cpu_by_role()
    results = stack.load(
        mode,
        processes=sizes.load_processes,
        seconds=sizes.seconds,
        concurrency=sizes.concurrency,
        address=address,
    )
    return results, _spent(stack, before, results)


def grpc_floor(sizes: Sizes) -> Figures:
    """Scenario 0, a reference: the standard health Check, which touches neither Postgres nor
    Redis, through the same API process (its interceptors included) and the same load
    generator. What gRPC in Python costs on this box before notifyd does any work."""
    with _stack(sizes, with_workers=False) as stack:
        return _health_checks(stack, sizes, None, _API_ROLES)


def _health_checks(
    stack: Stack, sizes: Sizes, address: str | None, roles: tuple[str, ...]
) -> Figures:
    results, spent = _closed_loop(stack, sizes, "health-closed", address)
    ok, _, elapsed, latencies, errors = _merge(results)
    return {
        "calls_per_s": ok / elapsed,
        **_latency_figures(latencies),
        "errors": float(sum(errors.values())),
        **_cpu_figures(spent, elapsed, ok, "call", roles),
    }


def bare_grpc_floor(sizes: Sizes, unary_target: float) -> Figures:
    """Scenario 0, second reading: the same calls against servers with nothing but grpcio's
    health service (bench/bare_grpc.py), as many as there are API processes. Its CPU per call
    is what a Python gRPC server pays here before it does anything: the unary target times
    that cost, set against the box's cores, bounds what SendNotification can reach."""
    with _stack(sizes, with_workers=False) as stack:
        figures = _health_checks(stack, sizes, stack.start_bare_grpc(), ("bare", "loadgen"))
        # Cores the bare servers alone would need at the unary target's rate.
        figures[f"server_cores_at_{unary_target:.0f}_per_s"] = (
            figures["cpu_ms_per_call_bare"] * unary_target / 1000
        )
        return figures


def unary_closed(sizes: Sizes) -> Figures:
    """Scenario 1: accepted/s with ``concurrency`` calls always in flight (no workers, so the
    figure is the accept path alone)."""
    with _stack(sizes, with_workers=False) as stack:
        results, spent = _closed_loop(stack, sizes, "unary-closed")
        ok, _, elapsed, latencies, errors = _merge(results)
        rows, queued = _queued_everywhere(stack)
        if rows < ok or queued < ok:
            raise RuntimeError(f"{ok} accepted but {rows} rows and {queued} queued")
        return {
            "accepted_per_s": ok / elapsed,
            **_latency_figures(latencies),
            "errors": float(sum(errors.values())),
            **_cpu_figures(spent, elapsed, ok, "call", _API_ROLES),
            **_rss(stack),
        }


def unary_open(sizes: Sizes, rate: float) -> Figures:
    """Scenario 2: latency at a fixed arrival rate, measured from each scheduled send time."""
    with _stack(sizes, with_workers=False) as stack:
        stack.load("unary-closed", seconds=1, concurrency=16)  # warm-up
        results = stack.load("unary-open", rate=rate, seconds=sizes.seconds)
        ok, _, elapsed, latencies, errors = _merge(results)
        return {
            "achieved_per_s": ok / elapsed,
            **_latency_figures(latencies),
            "errors": float(sum(errors.values())),
            **_rss(stack),
        }


def bulk(sizes: Sizes) -> Figures:
    """Scenario 3: BulkSend of 1000 recipients per call, ``bulk_concurrency`` calls in flight."""
    with _stack(sizes, with_workers=False) as stack:
        stack.load("bulk-closed", seconds=1, concurrency=1)  # warm-up
        before = stack.cpu_by_role()
        results = stack.load(
            "bulk-closed", seconds=sizes.seconds, concurrency=sizes.bulk_concurrency
        )
        spent = _spent(stack, before, results)
        _, recipients, elapsed, latencies, errors = _merge(results)
        return {
            "recipients_per_s": recipients / elapsed,
            "call_p99_ms": percentile(latencies, 99),
            "errors": float(sum(errors.values())),
            **_cpu_figures(spent, elapsed, recipients, "recipient", _API_ROLES),
            **_rss(stack),
        }


def _bulk_create(stack: Stack, count: int, schedule: datetime | None = None) -> None:
    """``count`` WEBHOOK notifications to the sink, 1000 per BulkSend (spread over one second
    after ``schedule`` when given)."""
    metadata = (("authorization", f"Bearer {stack.api_key}"),)
    with grpc.insecure_channel(stack.address) as channel:
        stub = svc_grpc.NotificationServiceStub(channel)
        created = 0
        while created < count:
            batch = min(1000, count - created)
            request = svc.BulkSendRequest(
                request_id=f"bench-{uuid.uuid4()}",
                channel=pb.CHANNEL_WEBHOOK,
                category="bench",
                content=pb.Content(title="bench", body="delivery"),
                recipients=[
                    svc.BulkRecipient(
                        user_id=f"u{created + i}", address=pb.Address(webhook_url=stack.sink_url)
                    )
                    for i in range(batch)
                ],
            )
            if schedule is not None:
                request.schedule_time.CopyFrom(
                    _timestamp(schedule + timedelta(seconds=created / count))
                )
            response = stub.BulkSend(request, metadata=metadata, timeout=300)
            if response.accepted_count != batch:
                raise RuntimeError(f"bulk accepted {response.accepted_count} of {batch}")
            created += batch


def _timestamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


def _wait_settled(stack: Stack, count: int, timeout: float = 900) -> float:
    """Wait until ``count`` notifications are SENT; the time (unix) it was first seen.

    Postgres is asked ten times a second only once the sink has seen ``count`` webhooks (and
    every 2 s before, in case some never reach it): counting every row ten times a second
    took about a tenth of a core from the stack being measured."""
    assert stack.postgres is not None
    deadline = time.monotonic() + timeout
    arrived = (0, 0)
    next_check = 0.0
    with psycopg.connect(stack.postgres.uri(), autocommit=True) as conn:
        while time.monotonic() < deadline:
            arrived = stack.sink_arrived(arrived)
            if arrived[0] >= count or time.monotonic() >= next_check:
                next_check = time.monotonic() + 2.0
                if _sent_count(conn) >= count:
                    return time.time()
            time.sleep(0.1)
    raise RuntimeError(f"not all {count} notifications were SENT within {timeout}s")


def _sent_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM notifications WHERE status = 'SENT'").fetchone()
    return row[0] if row else 0


def _sent_ids(stack: Stack) -> set[str]:
    assert stack.postgres is not None
    with psycopg.connect(stack.postgres.uri()) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM notifications WHERE status = 'SENT'")}


def delivery(sizes: Sizes) -> Figures:
    """Scenario 4: ``deliveries`` queued WEBHOOK notifications drained to the sink."""
    with _stack(sizes, with_workers=False) as stack:
        _bulk_create(stack, sizes.deliveries)
        stack.start_workers()
        # The first worker delivers while the second starts: what was sent before the reading
        # is left out of the CPU per delivery.
        before, started = stack.cpu_by_role(), time.time()
        assert stack.postgres is not None
        with psycopg.connect(stack.postgres.uri(), autocommit=True) as conn:
            sent_before = _sent_count(conn)
        done_at = _wait_settled(stack, sizes.deliveries)
        spent = _spent(stack, before, [])
        time.sleep(0.5)  # the sink flushes its log every 0.2 s
        arrivals = stack.sink_arrivals()
        seen = Counter(webhook_id for webhook_id, _ in arrivals)
        sent = _sent_ids(stack)
        first = min(at for _, at in arrivals)
        return {
            "deliveries_per_s": sizes.deliveries / (done_at - first),
            "lost": float(len(sent - seen.keys())),
            "duplicated": float(sum(n - 1 for n in seen.values())),
            "unknown_at_sink": float(len(seen.keys() - sent)),
            **_cpu_figures(
                spent,
                done_at - started,
                sizes.deliveries - sent_before,
                "delivery",
                ("worker", "postgres", "redis", "sink"),
            ),
            **_rss(stack),
        }


def bare_http_floor(sizes: Sizes, delivery_target: float) -> Figures:
    """Scenario 4, second reading: half as many webhooks POSTed straight to the same sink by
    bare aiohttp clients (bench/bare_http.py), one per worker process with as many in flight,
    recording nothing anywhere. Its CPU per POST is what sending a webhook from Python costs
    here before a delivery reads or writes its record, and less: nothing is built or signed
    per webhook."""
    each = sizes.deliveries // 2 // sizes.workers
    with _stack(sizes, with_workers=False) as stack:
        concurrency = Settings.from_env(stack.env).worker_concurrency
        stack.post_bare(1000 // sizes.workers, sizes.workers, concurrency)  # warm-up
        before = stack.cpu_by_role()
        results = stack.post_bare(each, sizes.workers, concurrency)
        spent = _spent(stack, before, results)
        spent["client"] = spent.pop("loadgen")
        ok = sum(r["ok"] for r in results)
        if ok != each * sizes.workers:
            raise RuntimeError(f"{ok} of {each * sizes.workers} POSTs answered 200")
        elapsed = _window(results)
        cpu = _cpu_figures(spent, elapsed, ok, "post", ("client", "sink"))
        return {
            "posts_per_s": ok / elapsed,
            **cpu,
            # Cores the clients alone would need at the delivery target's rate.
            f"client_cores_at_{delivery_target:.0f}_per_s": cpu["cpu_ms_per_post_client"]
            * delivery_target
            / 1000,
        }


def end_to_end(sizes: Sizes, rate: float) -> Figures:
    """Scenario 5: requests at a steady ``rate`` with workers running: from each request's
    scheduled send time to the sink's arrival."""
    with _stack(sizes, with_workers=True) as stack:
        sent_log = stack.root / "sent"
        results = stack.load("unary-open", sent_log=sent_log, rate=rate, seconds=sizes.seconds)
        ok, _, elapsed, _, errors = _merge(results)
        sent: dict[str, float] = {}
        for i in range(len(results)):
            for line in (stack.root / f"sent.{i}").read_text().splitlines():
                notification_id, _, at = line.partition(" ")
                sent[notification_id] = float(at)
        _wait_settled(stack, ok, timeout=300)
        time.sleep(0.5)
        arrivals = {webhook_id: at for webhook_id, at in stack.sink_arrivals()}
        latencies = [(arrivals[i] - at) * 1000 for i, at in sent.items() if i in arrivals]
        return {
            # Over the time the answers took, not the load's window: calls that waited in the
            # queue are answered after it ends.
            "achieved_per_s": ok / elapsed,
            "e2e_p50_ms": percentile(latencies, 50),
            "e2e_p99_ms": percentile(latencies, 99),
            "e2e_max_ms": max(latencies) if latencies else float("nan"),
            "missing": float(len(sent) - len(latencies)),
            "errors": float(sum(errors.values())),
            **_rss(stack),
        }


class _ClaimWatch:
    """Polls how many items still wait in Redis' priority sets every ``interval`` seconds, in a
    thread of its own: (time, items not yet claimed). Every item has one priority and workers
    claim in due order within it, so the k-th item to leave is the k-th due, and its claim time
    is the first poll that saw k items gone. Polls are ``interval`` apart until ``fine_until``
    (the figures that need them are the first claims), ``coarse`` apart after: a thread raised
    above the stack polling 100 times a second for a minute costs it a fifth of its deliveries.
    """

    def __init__(
        self, stack: Stack, fine_until: float, interval: float = 0.01, coarse: float = 0.2
    ) -> None:
        assert stack.redis is not None
        self._client = redis.Redis.from_url(stack.redis.url)
        prefix = f"{{{DEFAULT_NAMESPACE}}}"
        # With the earlier layout's delayed set, should an old one still hold items.
        self._keys = [f"{prefix}:ready:{p}" for p in range(1, 5)] + [f"{prefix}:delayed"]
        self._interval = interval
        self._fine_until = fine_until
        self._coarse = coarse
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> _ClaimWatch:
        self._thread.start()
        return self

    def __exit__(self, error_type: type[BaseException] | None, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            # The last items can be claimed and delivered between two coarse polls, and the
            # scenario ends as soon as they are SENT: one more look sees them gone. Their claim
            # time is then this look's, up to one coarse poll late: only the tail of the
            # all-items figures moves.
            if error_type is None and (not self.samples or self.samples[-1][1] > 0):
                self._sample()
        finally:
            self._client.close()

    def _sample(self) -> int:
        pipe = self._client.pipeline(transaction=True)
        for key in self._keys:
            pipe.zcard(key)
        remaining = sum(int(n) for n in pipe.execute())
        self.samples.append((time.time(), remaining))
        return remaining

    def _poll(self) -> None:
        # The stack under test keeps both cores busy: a starved observer would see claims
        # late and report its own delay as the scheduler's. Only this thread is raised.
        with contextlib.suppress(PermissionError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), -10)
        while not self._stop.is_set():
            if self._sample() == 0:
                return
            self._stop.wait(self._interval if time.time() < self._fine_until else self._coarse)

    def claim_lateness_ms(self, due: list[float]) -> list[float]:
        """For each due time (ascending), claim time minus due time, in ms."""
        count, lateness, k = len(due), [], 0
        for at, remaining in self.samples:
            while k < count - remaining:
                lateness.append((at - due[k]) * 1000)
                k += 1
        return lateness


def scheduled(sizes: Sizes) -> Figures:
    """Scenario 6: ``scheduled`` notifications due within one second, a few seconds ahead,
    created before the workers start. A scheduled item waits in its priority's Redis set under
    its due time and is claimable from that moment, with no step to move it (see
    redis_scheduler.py). Three readings of lateness:

    - the scheduler's (the issue's target): from the due time to the claim, for the items the
      workers had room for when they fell due (the first ``workers x concurrency``), so that
      what the scheduler adds is not mixed with the wait for a free slot;
    - the same for every item: 50,000 items due in one second wait for free slots, at the
      delivery rate of scenario 4; an item claimed before its due time counts as early;
    - the sink's: from the due time to arrival at the sink."""
    count = sizes.scheduled
    with _stack(sizes, with_workers=False) as stack:
        lead = 10 + count / 2000
        start_at = datetime.now(UTC) + timedelta(seconds=lead)
        _bulk_create(stack, count, schedule=start_at)
        if datetime.now(UTC) >= start_at:
            raise RuntimeError(f"creating {count} took longer than the {lead:.0f}s lead")
        # Past the first second of claims the figures are tens of seconds: coarse polls do.
        with _ClaimWatch(stack, fine_until=start_at.timestamp() + 2) as watch:
            stack.start_workers()
            done_at = _wait_settled(stack, count)
        time.sleep(0.5)
        assert stack.postgres is not None
        with psycopg.connect(stack.postgres.uri()) as conn:
            due = {
                r[0]: r[1].timestamp()
                for r in conn.execute("SELECT id, scheduled_at FROM notifications")
            }
        claims = watch.claim_lateness_ms(sorted(due.values()))
        if len(claims) != count:
            raise RuntimeError(f"{len(claims)} of {count} seen claimed")
        with_room = claims[: sizes.workers * Settings().worker_concurrency]
        arrivals = stack.sink_arrivals()
        lateness = [(at - due[i]) * 1000 for i, at in arrivals if i in due]
        first_due = min(due.values())
        return {
            "claim_lateness_with_room_p50_ms": percentile(with_room, 50),
            "claim_lateness_with_room_p99_ms": percentile(with_room, 99),
            "claim_lateness_with_room_max_ms": max(with_room),
            "claim_lateness_p50_ms": percentile(claims, 50),
            "claim_lateness_p99_ms": percentile(claims, 99),
            "claimed_early": float(sum(1 for x in claims if x < 0)),
            "due_items_per_s": count / max(done_at - first_due, 1e-9),
            "sink_lateness_p50_ms": percentile(lateness, 50),
            "sink_lateness_p99_ms": percentile(lateness, 99),
            "sink_lateness_max_ms": max(lateness),
            "early_at_sink": float(sum(1 for x in lateness if x < 0)),
            **_rss(stack),
        }
