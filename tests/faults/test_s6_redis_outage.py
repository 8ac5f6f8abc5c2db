"""Scenario 6: Redis down for 30 s under a steady stream of sends.

Measures what callers and recipients see when the queue is unreachable. Four callers start a
new webhook every 0.5 s each, before, during and after the outage; a call that gets UNAVAILABLE
(or runs into its deadline) is sent again every 2 s with the same request_id until accepted.
Redis is stopped cleanly for 30 s (the issue's figure) and started again on the same port with
its append-only file, so this is an outage, not a loss of data (scenario 5 covers the loss).
Afterwards every request is accepted, has exactly one row, and is delivered exactly once;
nothing is lost or stuck; no caller saw any code other than UNAVAILABLE/DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import (
    Cluster,
    all_delivered,
    assert_nothing_lost_or_stuck,
    running_cluster,
    summary,
    wait_until,
)
from tests.faults.load import SteadyLoad

pytestmark = pytest.mark.faults

OUTAGE = 30.0
BEFORE, AFTER = 3.0, 5.0


@pytest.fixture
def persistent_cluster(cluster_root: Path) -> Iterator[Cluster]:
    with running_cluster(cluster_root, redis_persistent=True) as started:
        yield started


def test_redis_outage_loses_and_doubles_nothing(persistent_cluster: Cluster) -> None:
    cluster = persistent_cluster
    assert cluster.sink is not None
    api = cluster.start_api()
    caller = cluster.issue_key()
    workers = cluster.start_workers(2)

    started = time.monotonic()
    load = SteadyLoad(
        api.stub, caller, cluster.sink_url, prefix="s6", clients=4, every=0.5, retry_every=2.0
    ).start()
    time.sleep(BEFORE)
    cluster.redis.stop()
    down_at = time.time()
    time.sleep(OUTAGE)
    cluster.redis.start()
    up_at = time.time()
    time.sleep(AFTER)
    report = load.stop(give_up_after=30)

    accepted = report.accepted
    wait_until(all_delivered(cluster, set(accepted.values())), timeout=40)
    elapsed = time.monotonic() - started
    audit = cluster.audit(accepted.values())
    rows_per_request = Counter(n.request_id for n in audit.rows.values())
    during = [r for r in report.results if r.accepted and down_at <= r.accepted_at <= up_at]
    summary(
        6,
        "Redis down 30s",
        elapsed,
        audit,
        requests=len(report.results),
        accepted=len(accepted),
        unavailable=report.count("UNAVAILABLE"),
        deadline_exceeded=report.count("DEADLINE_EXCEEDED"),
        retried_requests=report.retried,
        accepted_during_outage=len(during),
        never_accepted=len(report.not_accepted),
        other_errors=len(report.unexpected),
        rows=len(audit.rows),
    )
    assert_nothing_lost_or_stuck(audit, api.process, *workers)
    assert not report.unexpected, report.unexpected[:5]
    assert not report.not_accepted, [r.request_id for r in report.not_accepted[:5]]
    assert report.count("UNAVAILABLE") > 0, "the outage was seen by callers"
    # Exactly once per request_id: one row each, one accepted delivery each.
    assert set(rows_per_request) == set(accepted)
    assert max(rows_per_request.values()) == 1
    assert {audit.rows[nid].request_id for nid in accepted.values()} == set(accepted)
    assert audit.duplicates == 0, audit.describe(audit.duplicated_ids)
