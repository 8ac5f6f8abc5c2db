"""Scenario 1: SIGKILL a worker that holds 100 leased notifications.

Measures: a worker (concurrency 100) claims all 100 queued webhooks; while some of them are
being handed to a slow sink (2.5 s per answer) and the rest are still starting, it is killed
with SIGKILL. Two fresh workers must then deliver every one of the 100 (leases lapse after
NOTIFYD_LEASE_SECONDS and are recovered by housekeeping). The only repeats allowed are of the
webhooks that had reached the sink before the kill (in flight, their answer lost with the
process), each repeated once, under the same webhook-id, and each shows its abandoned attempt.
"""

from __future__ import annotations

import signal
import time

import pytest

from domain.notification import AttemptOutcome
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

COUNT = 100


def test_sigkill_worker_holding_100_leases(cluster: Cluster) -> None:
    assert cluster.sink is not None
    api = cluster.start_api()
    caller = cluster.issue_key()
    cluster.sink.control(status=200, delay=2.5)

    accepted = accept_webhooks(api.stub, caller, cluster.sink_url, COUNT, "s1")

    started = time.monotonic()
    (victim,) = cluster.start_workers(1, worker_concurrency="100")
    wait_for(cluster.leased_count, lambda n: n == COUNT, 15, "the worker leases all 100")
    # Kill while deliveries are part-way: some at the sink, some still starting.
    wait_for(lambda: len(cluster.sink.arrivals()), lambda n: n >= 30, 10, "30 webhooks in flight")
    victim.signal(signal.SIGKILL)
    assert victim.wait_exit(5) is not None
    leased_at_kill = cluster.leased_count()
    cluster.sink.control(delay=0)
    # Whatever reaches the sink before the rescuers exist was sent by the killed worker.
    rescue_started = time.time()
    rescuers = cluster.start_workers(2)
    in_flight = {a.id for a in cluster.sink.arrivals() if a.t < rescue_started}
    truncated = sum(1 for a in cluster.sink.arrivals() if a.status == 0)

    wait_until(all_delivered(cluster, accepted), timeout=30)
    elapsed = time.monotonic() - started
    audit = cluster.audit(accepted)
    repeated = audit.duplicated_ids
    abandoned = sum(audit.abandoned(nid) for nid in audit.rows)
    summary(
        1,
        "SIGKILL worker holding 100 leases",
        elapsed,
        audit,
        leased_at_kill=leased_at_kill,
        in_flight_at_kill=len(in_flight),
        cut_mid_request=truncated,
        repeated=len(repeated),
        abandoned_attempts=abandoned,
        delivered=len(audit.ok_counts),
    )
    assert_nothing_lost_or_stuck(audit, victim, *rescuers)
    assert leased_at_kill == COUNT, "the killed worker held every lease"
    # Repeats only for those in flight, once each, and the record says why.
    assert set(repeated) <= in_flight, (
        f"repeated but never in flight at the kill: {sorted(set(repeated) - in_flight)}"
    )
    assert max(audit.arrival_counts.values()) <= 2
    for nid in repeated:
        attempts = audit.rows[nid].attempts
        assert [a.outcome for a in attempts] == [AttemptOutcome.ABANDONED, AttemptOutcome.ACCEPTED]
    assert not audit.mislabelled, "every repeat carries the notification's id as webhook-id"
