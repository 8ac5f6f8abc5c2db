"""Scenario 7: Postgres killed and restarted under load.

Measures idempotency and delivery across a database crash. Four callers start a webhook every
0.25 s each (retrying UNAVAILABLE/DEADLINE_EXCEEDED with the same request_id every second); the
sink answers after 1 s so that about 16 deliveries are always in flight, and so hold an answer to
record when Postgres goes away; two workers deliver. Postgres is
killed (``pg_ctl -m immediate``: a crash, no checkpoint) for 5 s and started again on the same
data directory. Afterwards there is one row per request_id, every row is delivered, distinct
webhook-ids at the sink equal the rows, and a webhook-id is accepted by the sink twice only
where its record shows an abandoned attempt (a worker's answer that could not be recorded).
A worker that holds an answer while Postgres is down keeps trying to record it, so the figure
``repeats`` is expected to be 0.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.faults.harness import (
    Cluster,
    all_delivered,
    assert_nothing_lost_or_stuck,
    summary,
    wait_until,
)
from tests.faults.load import SteadyLoad

pytestmark = pytest.mark.faults

DOWN = 5.0
BEFORE, AFTER = 3.0, 5.0


def test_postgres_restart_under_load(cluster: Cluster) -> None:
    assert cluster.sink is not None
    cluster.sink.control(delay=1.0)
    api = cluster.start_api()
    caller = cluster.issue_key()
    workers = cluster.start_workers(2)

    started = time.monotonic()
    load = SteadyLoad(
        api.stub, caller, cluster.sink_url, prefix="s7", clients=4, every=0.25, retry_every=1.0
    ).start()
    time.sleep(BEFORE)
    cluster.kill_postgres()
    time.sleep(DOWN)
    cluster.start_postgres_again()
    time.sleep(AFTER)
    report = load.stop(give_up_after=30)

    accepted = report.accepted
    wait_until(all_delivered(cluster, set(accepted.values())), timeout=40)
    elapsed = time.monotonic() - started
    audit = cluster.audit(accepted.values())
    rows_per_request = Counter(n.request_id for n in audit.rows.values())
    ok = audit.ok_counts
    unexplained = sorted(nid for nid, c in ok.items() if c > 1 + audit.abandoned(nid))
    more_sends_than_attempts = sorted(
        nid
        for nid, c in audit.arrival_counts.items()
        if nid in audit.rows and c > len(audit.rows[nid].attempts)
    )
    summary(
        7,
        "Postgres restarted under load",
        elapsed,
        audit,
        requests=len(report.results),
        accepted=len(accepted),
        rows=len(audit.rows),
        unavailable=report.count("UNAVAILABLE"),
        deadline_exceeded=report.count("DEADLINE_EXCEEDED"),
        retried_requests=report.retried,
        other_errors=len(report.unexpected),
        repeats=len(audit.duplicated_ids),
        unexplained_repeats=len(unexplained),
        abandoned_attempts=sum(audit.abandoned(nid) for nid in audit.rows),
        outcome_write_retries_logged=sum(
            w.log().count("cannot record the outcome") for w in workers
        ),
    )
    assert_nothing_lost_or_stuck(audit, api.process, *workers)
    assert not report.unexpected, report.unexpected[:5]
    assert not report.not_accepted, [r.request_id for r in report.not_accepted[:5]]
    assert report.count("UNAVAILABLE") + report.count("DEADLINE_EXCEEDED") > 0
    assert max(rows_per_request.values()) == 1, "one row per request_id"
    assert set(rows_per_request) == set(accepted), "a row for each accepted request, no other"
    assert set(ok) == set(audit.rows), "distinct webhook-ids at the sink == rows"
    assert not unexplained, f"twice, no abandoned attempt: {audit.describe(unexplained)}"
    assert not more_sends_than_attempts, audit.describe(more_sends_than_attempts)
