"""Scenario 8: a receiver that always answers 500, then dead-letter replay.

Measures the retry budget and the dead-letter path. With NOTIFYD_MAX_ATTEMPTS_WEBHOOK=3 (and a
different global NOTIFYD_MAX_ATTEMPTS=5, so the per-channel setting is what counts), each of 5
webhooks reaches the sink exactly 3 times, then is FAILED and listed by ListDeadLetters (paged,
2 per page). The sink is switched to 200 and ReplayDeadLetters sends them again: each is
delivered once more, keeping its id and its history: GetNotification shows the 3 failed
attempts plus 1 accepted, and the status history goes FAILED then QUEUED again.
"""

from __future__ import annotations

import time
import uuid

import pytest

from interfaces.grpc.gen.notify.v1 import notification_pb2 as pb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as svc_grpc
from tests.faults.harness import (
    Caller,
    Cluster,
    all_delivered,
    assert_nothing_lost_or_stuck,
    send_retrying,
    summary,
    wait_until,
    webhook_request,
)

pytestmark = pytest.mark.faults

COUNT = 5
ATTEMPTS = 3
CATEGORY = "fault_dead_letter"


def list_all(stub: svc_grpc.NotificationServiceStub, caller: Caller) -> list[pb.Notification]:
    found: list[pb.Notification] = []
    token = ""
    for _ in range(20):
        page = stub.ListDeadLetters(
            svc.ListDeadLettersRequest(
                channel=pb.CHANNEL_WEBHOOK, category=CATEGORY, page_size=2, page_token=token
            ),
            metadata=caller.metadata,
            timeout=10,
        )
        found.extend(page.notifications)
        token = page.next_page_token
        if not token:
            return found
    raise AssertionError("ListDeadLetters kept returning page tokens")


def test_always_500_dead_letters_then_replay_delivers_once(cluster: Cluster) -> None:
    assert cluster.sink is not None
    cluster.sink.control(status=500)
    api = cluster.start_api()
    caller = cluster.issue_key()
    workers = cluster.start_workers(1, max_attempts_webhook=str(ATTEMPTS), max_attempts="5")

    started = time.monotonic()
    ids: list[str] = []
    for _ in range(COUNT):
        result = send_retrying(
            api.stub,
            caller,
            webhook_request(f"s8-{uuid.uuid4()}", cluster.sink_url, category=CATEGORY),
            until=time.monotonic() + 10,
        )
        assert result.accepted, result
        ids.append(result.notification_id)

    def all_failed() -> bool:
        rows = cluster.notifications()
        return all(rows[nid].status.value == "FAILED" for nid in ids)

    wait_until(all_failed, timeout=20, interval=0.2)
    time.sleep(1.0)  # a worker that wrongly retries would have sent again by now
    failed = cluster.audit(ids)
    sends_before = {nid: failed.arrival_counts[nid] for nid in ids}
    listed = list_all(api.stub, caller)
    listed_ids = [n.id for n in listed]

    cluster.sink.control(status=200)
    replayed = api.stub.ReplayDeadLetters(
        svc.ReplayDeadLettersRequest(ids=ids), metadata=caller.metadata, timeout=10
    ).notifications
    wait_until(all_delivered(cluster, set(ids)), timeout=20)
    time.sleep(0.5)
    elapsed = time.monotonic() - started
    audit = cluster.audit(ids)
    records = {
        nid: api.stub.GetNotification(
            svc.GetNotificationRequest(id=nid), metadata=caller.metadata, timeout=10
        ).notification
        for nid in ids
    }
    listed_after = list_all(api.stub, caller)
    summary(
        8,
        "always-500 sink, dead letter, replay",
        elapsed,
        audit,
        sends_before_dead_letter=sorted(set(sends_before.values())),
        dead_lettered=sum(1 for nid in ids if failed.rows[nid].status.value == "FAILED"),
        listed=len(listed_ids),
        replayed=len(replayed),
        delivered_after_replay=sum(1 for nid in ids if audit.ok_counts[nid] == 1),
        listed_after_replay=len(listed_after),
    )
    assert_nothing_lost_or_stuck(audit, *workers)
    assert sends_before == dict.fromkeys(ids, ATTEMPTS), "exactly the configured attempts"
    assert all(
        [a.outcome.value for a in failed.rows[nid].attempts] == ["TRANSIENT_FAILURE"] * ATTEMPTS
        for nid in ids
    ), failed.describe(ids)
    assert sorted(listed_ids) == sorted(ids), "every dead letter listed, once"
    assert all(n.status == pb.NOTIFICATION_STATUS_FAILED for n in listed)
    assert sorted(n.id for n in replayed) == sorted(ids), "replay keeps the ids"
    assert all(n.status == pb.NOTIFICATION_STATUS_QUEUED for n in replayed)
    assert audit.duplicates == 0
    for nid, n in records.items():
        assert n.id == nid
        assert n.status == pb.NOTIFICATION_STATUS_SENT
        assert [a.outcome for a in n.attempts] == [pb.ATTEMPT_OUTCOME_TRANSIENT_FAILURE] * 3 + [
            pb.ATTEMPT_OUTCOME_ACCEPTED
        ]
        history = [c.status for c in n.status_history]
        failed_at = history.index(pb.NOTIFICATION_STATUS_FAILED)
        assert pb.NOTIFICATION_STATUS_QUEUED in history[failed_at + 1 :], history
        assert history[-1] == pb.NOTIFICATION_STATUS_SENT
        assert audit.arrival_counts[nid] == ATTEMPTS + 1
    assert not listed_after, "a delivered notification is no longer a dead letter"
