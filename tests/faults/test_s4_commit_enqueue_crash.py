"""Scenario 4: a crash between the commit in Postgres and the enqueue in Redis.

Measures the reconciler. Two ways to leave a committed QUEUED notification out of Redis:
(a) 10 rows written straight through the SQL unit of work (``Notification.accept`` + commit,
never enqueued: the API process died right after its commit); (b) 10 sends through the API,
scheduled 3 s ahead, whose ids are then removed from Redis with the scheduler's own
``remove``. Running workers must find all 20 (NOTIFYD_RECONCILE_GRACE_SECONDS=1, housekeeping
every 1 s) and deliver each exactly once, the scheduled ones not before their schedule time.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import datetime, timedelta

import pytest

from application.use_cases.deliver_notification import EARLY_TOLERANCE
from domain.notification import (
    Address,
    Channel,
    Content,
    NewNotification,
    Notification,
    Priority,
)
from infrastructure.clock import UuidV7Generator
from infrastructure.persistence.engine import create_engine
from infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from tests.faults.harness import (
    Caller,
    Cluster,
    all_delivered,
    assert_nothing_lost_or_stuck,
    now_utc,
    send_retrying,
    summary,
    wait_until,
    webhook_request,
)

pytestmark = pytest.mark.faults

EACH = 10


def commit_without_enqueue(cluster: Cluster, caller: Caller, count: int) -> list[str]:
    """What SendNotification does up to its commit, and then nothing."""

    async def insert() -> list[str]:
        engine = create_engine(cluster.pg.sqlalchemy_url(), pool_size=2)
        ids = UuidV7Generator()
        made: list[str] = []
        try:
            async with SqlUnitOfWorkFactory(engine)() as uow:
                for _ in range(count):
                    request_id = f"s4-direct-{uuid.uuid4()}"
                    n = Notification.accept(
                        NewNotification(
                            request_id=request_id,
                            user_id="user-s4",
                            channel=Channel.WEBHOOK,
                            priority=Priority.MEDIUM,
                            category="fault",
                            content=Content("fault test", request_id),
                            address=Address("webhook_url", cluster.sink_url),
                        ),
                        id=ids.new_id(),
                        tenant_id=caller.tenant,
                        caller="faults",
                        fingerprint=f"fp-{request_id}",
                        now=now_utc(),
                    )
                    assert await uow.notifications.add(n)
                    made.append(n.id)
                await uow.commit()
        finally:
            await engine.dispose()
        return made

    return asyncio.run(insert())


def test_reconciler_delivers_what_was_committed_but_never_enqueued(cluster: Cluster) -> None:
    assert cluster.sink is not None
    api = cluster.start_api()
    caller = cluster.issue_key()
    workers = cluster.start_workers(2)
    started = time.monotonic()

    direct = commit_without_enqueue(cluster, caller, EACH)
    schedule: dict[str, datetime] = {}
    at = now_utc() + timedelta(seconds=3)
    for _ in range(EACH):
        result = send_retrying(
            api.stub,
            caller,
            webhook_request(f"s4-api-{uuid.uuid4()}", cluster.sink_url, schedule_at=at),
            until=time.monotonic() + 10,
        )
        assert result.accepted, result
        schedule[result.notification_id] = at
    cluster.remove_from_queue(schedule)
    removed_at = time.monotonic()
    missing = set(direct) | set(schedule)
    left_in_redis = missing & set().union(*cluster.queue_sets().values())
    assert not left_in_redis, "the scheduled sends were removed from Redis before they were due"

    wait_until(all_delivered(cluster, missing), timeout=25)
    recovered_in = time.monotonic() - removed_at
    elapsed = time.monotonic() - started
    audit = cluster.audit(missing)
    first_ok = {}
    for a in audit.arrivals:
        if a.ok:
            first_ok.setdefault(a.id, a.t)
    early = sorted(
        nid
        for nid, at in schedule.items()
        if nid in first_ok and first_ok[nid] < (at - EARLY_TOLERANCE).timestamp()
    )
    reconciled = sum(
        int(n) for w in workers for n in re.findall(r"reconciler re-enqueued (\d+)", w.log())
    )
    summary(
        4,
        "crash between commit and enqueue",
        elapsed,
        audit,
        never_enqueued=len(direct),
        removed_from_redis=len(schedule),
        reconciled_logged=reconciled,
        all_delivered_in=f"{recovered_in:.1f}s",
        sent_early=len(early),
    )
    assert_nothing_lost_or_stuck(audit, *workers)
    assert audit.duplicates == 0, audit.describe(audit.duplicated_ids)
    assert not early, f"delivered before schedule_time: {early}"
