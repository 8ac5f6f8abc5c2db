"""Scenario 5: Redis restarted empty while 5000 notifications wait in it.

Measures the rebuild from Postgres. With two workers running, 5000 webhooks are accepted through
BulkSend, all scheduled: 2500 due soon (15-17 s ahead) and 2500 spread 22-32 s ahead. Redis is
then restarted without persistence (same port, everything it held is gone, new run_id). The
workers must notice the run_id change and re-enqueue every unsettled row from Postgres: Redis
holds all 5000 again within a few housekeeping rounds, every one is delivered exactly once, and
none reaches the sink before its schedule_time.
"""

from __future__ import annotations

import signal
import time
import uuid
from datetime import datetime, timedelta

import pytest

from application.use_cases.deliver_notification import EARLY_TOLERANCE
from interfaces.grpc.gen.notify.v1 import notification_pb2 as pb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc
from tests.faults.harness import (
    Cluster,
    all_delivered,
    assert_nothing_lost_or_stuck,
    now_utc,
    summary,
    timestamp,
    wait_until,
)

pytestmark = pytest.mark.faults

PER_CALL = 500
# Accepting 5000 takes about 10 s here: the first schedule time leaves room to wipe Redis first.
SOON = [15.0, 15.5, 16.0, 16.5, 17.0]
LATER = [22.0, 24.5, 27.0, 29.5, 32.0]
TOTAL = PER_CALL * (len(SOON) + len(LATER))


def bulk(url: str, at: datetime) -> svc.BulkSendRequest:
    request = svc.BulkSendRequest(
        request_id=f"s5-{uuid.uuid4()}",
        channel=pb.CHANNEL_WEBHOOK,
        priority=pb.PRIORITY_MEDIUM,
        category="fault",
        content=pb.Content(title="fault test", body="scheduled"),
        recipients=[
            svc.BulkRecipient(user_id=f"user-{i}", address=pb.Address(webhook_url=url))
            for i in range(PER_CALL)
        ],
    )
    request.schedule_time.CopyFrom(timestamp(at))
    return request


def test_redis_restarted_empty_is_rebuilt_from_postgres(cluster: Cluster) -> None:
    assert cluster.sink is not None
    api = cluster.start_api()
    caller = cluster.issue_key()
    workers = cluster.start_workers(2)

    started = time.monotonic()
    t0 = now_utc()
    schedule: dict[str, datetime] = {}
    for offset in SOON + LATER:
        at = t0 + timedelta(seconds=offset)
        response = api.stub.BulkSend(
            bulk(cluster.sink_url, at), metadata=caller.metadata, timeout=60
        )
        assert response.accepted_count == PER_CALL, response.results[:3]
        schedule.update({r.notification_id: at for r in response.results})
    accepted_in = time.monotonic() - started
    assert len(schedule) == TOTAL
    waiting_before = cluster.queued_count()

    wiped_at = now_utc()
    cluster.redis.stop(signal.SIGKILL)
    cluster.redis.start()
    cluster.redis_client().close()
    assert wiped_at < t0 + timedelta(seconds=min(SOON)), "harness too slow: items fell due"
    assert cluster.queued_count() == 0, "Redis came back empty"

    def unaccounted() -> set[str]:
        """Ids neither back in Redis nor already delivered."""
        assert cluster.sink is not None
        in_redis = set().union(*cluster.queue_sets().values())
        return set(schedule) - in_redis - cluster.sink.ok_ids()

    rebuilt = wait_until(lambda: not unaccounted(), timeout=10, interval=0.2)
    rebuilt_in = (now_utc() - wiped_at).total_seconds()
    rebuilt_count = TOTAL - len(unaccounted())

    wait_until(all_delivered(cluster, set(schedule)), timeout=max(LATER) + 25)
    elapsed = time.monotonic() - started
    audit = cluster.audit(schedule)
    first_ok: dict[str, float] = {}
    for a in audit.arrivals:
        if a.ok:
            first_ok.setdefault(a.id, a.t)
    early = sorted(
        nid
        for nid, at in schedule.items()
        if nid in first_ok and first_ok[nid] < (at - EARLY_TOLERANCE).timestamp()
    )
    late = sorted(first_ok[nid] - at.timestamp() for nid, at in schedule.items() if nid in first_ok)
    summary(
        5,
        "Redis restarted empty",
        elapsed,
        audit,
        accepted=len(schedule),
        accepted_in=f"{accepted_in:.1f}s",
        waiting_before_wipe=waiting_before,
        rebuilt=rebuilt_count,
        rebuilt_in=f"{rebuilt_in:.1f}s",
        sent_early=len(early),
        p50_late=f"{late[len(late) // 2]:.2f}s" if late else "-",
        max_late=f"{late[-1]:.2f}s" if late else "-",
    )
    assert_nothing_lost_or_stuck(audit, *workers)
    assert waiting_before == TOTAL
    assert rebuilt, f"Redis holds {rebuilt_count} of {TOTAL} after the rebuild window"
    assert not early, f"{len(early)} delivered before schedule_time"
    assert audit.duplicates == 0, audit.describe(audit.duplicated_ids)
