"""Scenario: many notifications scheduled for the same second. How late do they go out?

Creates N IN_APP notifications through BulkSend (1000 per call) all scheduled inside one
second a few seconds ahead, with no worker running, then starts the workers and waits until
every one is DELIVERED. Lateness = delivery time (from the status history in Postgres) minus
the scheduled time. Reports due items/s (from the first due time to the last delivery) and
lateness percentiles. An item delivered before its time counts as "early" (must be 0).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp

from bench.stack import Stack
from bench.stats import percentile
from interfaces.grpc.gen.notify.v1 import notification_pb2 as pb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as svc_grpc


def run(count: int, workers: int, lead_seconds: float | None = None) -> dict[str, float]:
    # Long enough to create every notification before the first falls due.
    lead_seconds = lead_seconds if lead_seconds is not None else 10 + count / 400
    stack = Stack(workers=workers).start()
    try:
        metadata = (("authorization", f"Bearer {stack.api_key}"),)
        start_at = datetime.now(UTC) + timedelta(seconds=lead_seconds)
        with grpc.insecure_channel(stack.address) as channel:
            stub = svc_grpc.NotificationServiceStub(channel)
            created = 0
            while created < count:
                batch = min(1000, count - created)
                # Spread due times evenly over one second.
                when = Timestamp()
                when.FromDatetime(start_at + timedelta(seconds=created / count))
                response = stub.BulkSend(
                    svc.BulkSendRequest(
                        request_id=f"bench-{uuid.uuid4()}",
                        channel=pb.CHANNEL_IN_APP,
                        category="bench",
                        content=pb.Content(title="scheduled"),
                        schedule_time=when,
                        recipients=[
                            svc.BulkRecipient(user_id=f"u{created + i}") for i in range(batch)
                        ],
                    ),
                    metadata=metadata,
                    timeout=120,
                )
                assert response.accepted_count == batch, response
                created += batch
        if datetime.now(UTC) >= start_at:
            raise RuntimeError(f"creating {count} took longer than the {lead_seconds}s lead")
        stack.start_workers()
        assert stack.postgres is not None
        deadline = time.monotonic() + 600
        with psycopg.connect(stack.postgres.uri()) as conn:
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT count(*) FROM notifications WHERE status <> 'DELIVERED'"
                ).fetchone()
                conn.commit()
                if row is not None and row[0] == 0:
                    break
                time.sleep(0.5)
            rows = conn.execute(
                """
                SELECT scheduled_at,
                       (SELECT (h->>'at')::timestamptz FROM jsonb_array_elements(history) h
                        WHERE h->>'s' = 'DELIVERED' LIMIT 1) AS delivered_at
                FROM notifications
                """
            ).fetchall()
        lateness = [(d - s).total_seconds() * 1000 for s, d in rows if d is not None]
        if len(lateness) != count:
            raise RuntimeError(f"only {len(lateness)} of {count} delivered in time")
        first_due = min(s for s, _ in rows)
        last_done = max(d for _, d in rows)
        return {
            "due_items_per_s": count / max((last_done - first_due).total_seconds(), 1e-9),
            "lateness_p50_ms": percentile(lateness, 50),
            "lateness_p99_ms": percentile(lateness, 99),
            "lateness_max_ms": max(lateness),
            "early": float(sum(1 for x in lateness if x < 0)),
        }
    finally:
        stack.stop()
