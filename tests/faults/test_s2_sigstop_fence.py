"""Scenario 2: SIGSTOP a worker past its lease, then SIGCONT it.

Measures the fence. A worker takes 20 webhooks and is frozen (SIGSTOP) while all 20 are at the
sink. Its leases lapse; a second worker recovers them, abandons the frozen worker's attempts and
delivers each (attempt 2, ACCEPTED). Then the frozen worker resumes with 20 stale outcomes in
hand: every write of them must be refused (compare-and-set), so each record is exactly what the
second worker left (same version, attempts [ABANDONED, ACCEPTED], status SENT) and nothing is
queued again.
"""

from __future__ import annotations

import signal
import time

import pytest

from domain.notification import AttemptOutcome, Status
from tests.faults.harness import (
    Cluster,
    accept_webhooks,
    all_delivered,
    assert_nothing_lost_or_stuck,
    summary,
    wait_for,
    wait_until,
)

pytestmark = pytest.mark.faults

COUNT = 20
LEASE = 4.0


def test_sigstopped_worker_cannot_overwrite_newer_attempts(cluster: Cluster) -> None:
    assert cluster.sink is not None
    api = cluster.start_api()
    caller = cluster.issue_key()
    cluster.sink.control(status=200, delay=2.0)
    accepted = accept_webhooks(api.stub, caller, cluster.sink_url, COUNT, "s2")

    started = time.monotonic()
    (frozen,) = cluster.start_workers(1, worker_concurrency=str(COUNT), lease_seconds=str(LEASE))
    wait_for(
        lambda: {a.id for a in cluster.sink.arrivals() if a.ok},
        lambda ids: ids >= accepted,
        10,
        "every webhook at the sink",
    )
    frozen.signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    cluster.sink.control(delay=0)
    (rescuer,) = cluster.start_workers(1, lease_seconds=str(LEASE))
    wait_until(all_delivered(cluster, accepted), timeout=25)
    before = cluster.audit(accepted)
    frozen_for = time.monotonic() - stopped_at

    frozen.signal(signal.SIGCONT)
    # The frozen worker claimed before the first of its webhooks reached the sink.
    past_lease = time.time() - (min(a.t for a in before.arrivals) + LEASE)
    # Let the resumed worker read its 20 late answers and try to record them.
    wait_until(lambda: frozen.log().count(" rejected") >= COUNT, timeout=8)
    time.sleep(1.0)
    after = cluster.audit(accepted)
    elapsed = time.monotonic() - started

    overwritten = sorted(
        nid
        for nid in accepted
        if nid in before.rows
        and (
            after.rows[nid].version != before.rows[nid].version
            or after.rows[nid].attempts != before.rows[nid].attempts
            or after.rows[nid].history != before.rows[nid].history
        )
    )
    newer_attempt_kept = sum(
        1
        for nid in accepted
        if [a.outcome for a in after.rows[nid].attempts]
        == [AttemptOutcome.ABANDONED, AttemptOutcome.ACCEPTED]
    )
    summary(
        2,
        "SIGSTOP worker past its lease",
        elapsed,
        after,
        frozen_seconds=f"{frozen_for:.1f}",
        resumed_past_lease=f"{past_lease:.1f}s",
        stale_writes_written=len(overwritten),
        newer_attempt_kept=newer_attempt_kept,
        stale_rejections_logged=frozen.log().count(" rejected"),
    )
    assert_nothing_lost_or_stuck(after, frozen, rescuer)
    assert past_lease > 0, "the worker stayed frozen past its lease"
    assert not overwritten, f"stale outcomes were written: {after.describe(overwritten)}"
    assert newer_attempt_kept == COUNT, after.describe(accepted, COUNT)
    assert all(after.rows[nid].status is Status.SENT for nid in accepted)
    # The resumed worker sent nothing more: two arrivals each, the stale one and the rescue.
    assert max(after.arrival_counts.values()) == 2
    assert frozen.running, "the resumed worker carries on"
