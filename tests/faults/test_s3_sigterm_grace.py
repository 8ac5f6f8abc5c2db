"""Scenario 3: SIGTERM a worker with work in flight.

Measures graceful shutdown. A worker (grace NOTIFYD_SHUTDOWN_GRACE_SECONDS=2) has 40 webhooks
at the sink, once with every slot busy (concurrency 40) and once with slots to spare
(concurrency 80): half are answered after 1.0 s, half after 2.5 s. On SIGTERM
it must finish what finishes within the grace period and hand the rest back at once, then exit
within grace plus a small margin (1 s), recording no outcome after the grace period. Right after
it exits no lease of it is left in Redis (released, not left to lapse), every notification is
either SENT or waiting in the queue, and a second worker delivers the released ones. Repeats
are allowed only for the cut-off deliveries.
"""

from __future__ import annotations

import signal
import time
from datetime import timedelta

import pytest

from domain.notification import AttemptOutcome, Status
from tests.faults.harness import (
    Cluster,
    accept_webhooks,
    all_delivered,
    assert_nothing_lost_or_stuck,
    now_utc,
    summary,
    wait_for,
    wait_until,
)

pytestmark = pytest.mark.faults

COUNT = 40
GRACE = 2.0
MARGIN = 1.0
QUICK, SLOW = 1.0, 2.5
# Clock reading and commit latency of an outcome written right at the end of the grace period.
TOLERANCE = 0.25


@pytest.mark.parametrize(
    "concurrency",
    [pytest.param(COUNT, id="all-slots-busy"), pytest.param(2 * COUNT, id="slots-to-spare")],
)
def test_sigterm_finishes_or_releases_within_grace(cluster: Cluster, concurrency: int) -> None:
    assert cluster.sink is not None
    api = cluster.start_api()
    caller = cluster.issue_key()
    cluster.sink.control(status=200, delays=[QUICK, SLOW])
    accepted = accept_webhooks(api.stub, caller, cluster.sink_url, COUNT, "s3")

    started = time.monotonic()
    (leaving,) = cluster.start_workers(
        1, worker_concurrency=str(concurrency), shutdown_grace_seconds=str(GRACE)
    )
    wait_for(
        lambda: {a.id for a in cluster.sink.arrivals() if a.ok},
        lambda ids: ids >= accepted,
        10,
        "every webhook at the sink",
    )
    cluster.sink.control(delays=[], delay=0)
    leaving.signal(signal.SIGTERM)
    term_at = time.monotonic()
    term_wall = now_utc()
    code = leaving.wait_exit(GRACE + 10)
    exit_seconds = time.monotonic() - term_at
    queue = cluster.queue_sets()
    rows = cluster.notifications()
    left_leased = accepted & queue["leased"]
    finished = {nid for nid in accepted if rows[nid].status is Status.SENT}
    released = {nid for nid in accepted - finished if nid in queue["ready"] | queue["delayed"]}
    unaccounted = accepted - finished - released
    slow = {a.id for a in cluster.sink.arrivals() if a.delay == SLOW}
    # Outcomes the leaving worker recorded after its grace period had run out.
    overtime = sorted(
        nid
        for nid in accepted
        for a in rows[nid].attempts
        if a.started_at < term_wall
        and a.finished_at is not None
        and a.finished_at > term_wall + timedelta(seconds=GRACE + TOLERANCE)
        and a.outcome is not AttemptOutcome.ABANDONED
    )

    (successor,) = cluster.start_workers(1)
    successor_at = time.monotonic()
    wait_until(all_delivered(cluster, accepted), timeout=20)
    redelivered_in = time.monotonic() - successor_at
    elapsed = time.monotonic() - started
    audit = cluster.audit(accepted)
    summary(
        3,
        f"SIGTERM with work in flight (concurrency {concurrency})",
        elapsed,
        audit,
        exit_seconds=f"{exit_seconds:.2f}",
        grace=GRACE,
        finished_in_grace=len(finished),
        released=len(released),
        left_leased=len(left_leased),
        finished_after_grace=len(overtime),
        released_delivered_in=f"{redelivered_in:.2f}s",
    )
    assert_nothing_lost_or_stuck(audit, leaving, successor)
    assert code is not None, "the worker did not exit"
    assert exit_seconds <= GRACE + MARGIN, f"exit took {exit_seconds:.2f}s (grace {GRACE}s)"
    assert code == 0, leaving.log_tail()
    assert not overtime, f"{len(overtime)} deliveries went on past the grace period"
    assert not left_leased, f"{len(left_leased)} leases left to lapse instead of released"
    assert not unaccounted, f"neither finished nor back in the queue: {sorted(unaccounted)}"
    assert finished, "the quick deliveries finished within the grace period"
    assert released <= slow, "only the slow deliveries were cut off"
    # A cut-off delivery may arrive twice (its answer was lost with the cut); nothing else may.
    assert set(audit.duplicated_ids) <= released
    for nid in audit.duplicated_ids:
        assert AttemptOutcome.ABANDONED in [a.outcome for a in audit.rows[nid].attempts]
