"""The record through the real server: what GetNotification tells, engagement, listing with
filters and pages, and statistics that agree with what was sent."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from interfaces.grpc.gen.notify.v1 import notification_pb2 as pb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as svc_grpc
from tests.e2e.conftest import ORDER_SHIPPED
from tests.e2e.harness import Caller, Notifyd
from tests.e2e.helpers import error_reason, eventually, field_violations
from tests.unit.application.fake_record import percentile_cont

pytestmark = pytest.mark.e2e

S = pb.NotificationStatus
ACCEPTED = {S.NOTIFICATION_STATUS_SENT, S.NOTIFICATION_STATUS_DELIVERED, S.NOTIFICATION_STATUS_READ}
SETTLED = ACCEPTED | {S.NOTIFICATION_STATUS_FAILED}


@dataclass
class Sent:
    """One tenant of its own (so its statistics are exactly what this module sent), two
    calling services, and the ids of what each sent."""

    tenant: str
    shop: Caller
    crm: Caller
    started: datetime
    ids: dict[str, str]
    acme: Caller


def _ts(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def _dt(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def _get(stub: svc_grpc.NotificationServiceStub, caller: Caller, nid: str) -> pb.Notification:
    return stub.GetNotification(
        svc.GetNotificationRequest(id=nid), metadata=caller.metadata
    ).notification


def _refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert isinstance(caught.value, grpc.RpcError)
    return caught.value


@pytest.fixture(scope="module")
def sent(
    notifyd: Notifyd,
    stub: svc_grpc.NotificationServiceStub,
    tmp_path_factory: pytest.TempPathFactory,
) -> Sent:
    tenant = f"record-{uuid.uuid4().hex[:10]}"
    shop = notifyd.issue_key(tenant, "shop")
    crm = notifyd.issue_key(tenant, "crm")
    template = Path(tmp_path_factory.mktemp("record")) / "order_shipped.json"
    template.write_text(json.dumps(ORDER_SHIPPED))
    notifyd.cli("templates", "put", "order_shipped", "--tenant", tenant, "--file", str(template))
    started = datetime.now(UTC) - timedelta(seconds=1)

    def send(caller: Caller, **fields: object) -> str:
        request = svc.SendNotificationRequest(request_id=f"req-{uuid.uuid4()}", **fields)  # type: ignore[arg-type]
        return stub.SendNotification(request, metadata=caller.metadata).notification.id

    ok_url = f"{notifyd.sink_url}/record"
    hook = {
        "channel": pb.CHANNEL_WEBHOOK,
        "category": "order_shipped",
        "content": pb.Content(title="Shipped", body="on its way"),
    }
    ids: dict[str, str] = {}
    ids["hook-1"] = send(
        shop,
        user_id="alice",
        priority=pb.PRIORITY_HIGH,
        address=pb.Address(webhook_url=ok_url),
        **hook,
    )
    for name in ("hook-2", "hook-3", "hook-4"):
        ids[name] = send(shop, user_id="alice", address=pb.Address(webhook_url=ok_url), **hook)
    variables = Struct()
    variables.update({"order_id": "R-1", "name": "Bob"})
    ids["hook-tpl"] = send(
        shop,
        user_id="bob",
        channel=pb.CHANNEL_WEBHOOK,
        category="order_shipped",
        template=pb.TemplateReference(name="order_shipped", variables=variables),
        address=pb.Address(webhook_url=ok_url),
    )
    ids["hook-gone"] = send(
        shop, user_id="alice", address=pb.Address(webhook_url=f"{notifyd.sink_url}/gone"), **hook
    )
    for name in ("inbox-1", "inbox-2", "inbox-3"):
        ids[name] = send(
            crm,
            user_id="carol",
            channel=pb.CHANNEL_IN_APP,
            category="mention",
            content=pb.Content(title="You were mentioned", body="in #general"),
        )
    for nid in ids.values():
        eventually(lambda nid=nid: _get(stub, shop, nid), lambda n: n.status in SETTLED)
    return Sent(tenant, shop, crm, started, ids, notifyd.callers["acme"])


# -- GetNotification --------------------------------------------------------------------------


def test_get_notification_returns_the_full_record(
    stub: svc_grpc.NotificationServiceStub, sent: Sent
) -> None:
    n = _get(stub, sent.shop, sent.ids["hook-tpl"])
    assert (n.tenant_id, n.caller_service, n.user_id) == (sent.tenant, "shop", "bob")
    assert (n.template_name, n.template_version) == ("order_shipped", 1)
    assert n.content.data["title"] == "Order R-1 shipped"  # as rendered
    assert n.status == S.NOTIFICATION_STATUS_SENT
    history = [(c.status, _dt(c.time)) for c in n.status_history]
    assert [s for s, _ in history] == [
        S.NOTIFICATION_STATUS_PENDING,
        S.NOTIFICATION_STATUS_QUEUED,
        S.NOTIFICATION_STATUS_SENDING,
        S.NOTIFICATION_STATUS_SENT,
    ]
    times = [t for _, t in history]
    assert times == sorted(times)
    assert times[0] == _dt(n.create_time)
    (attempt,) = n.attempts
    assert attempt.provider == "webhook"
    assert attempt.outcome == pb.ATTEMPT_OUTCOME_ACCEPTED
    assert attempt.provider_message_id
    assert attempt.error_class == ""
    assert attempt.channel == pb.CHANNEL_WEBHOOK
    took = _dt(attempt.end_time) - _dt(attempt.start_time)
    assert attempt.latency_ms == int(took.total_seconds() * 1000)
    assert list(n.engagements) == []

    gone = _get(stub, sent.shop, sent.ids["hook-gone"])
    assert gone.status == S.NOTIFICATION_STATUS_FAILED
    assert gone.attempts[-1].outcome == pb.ATTEMPT_OUTCOME_PERMANENT_FAILURE
    assert gone.attempts[-1].error_class == "PERMANENT"
    assert gone.attempts[-1].error_message


# -- TrackEngagement --------------------------------------------------------------------------


def _track(
    stub: svc_grpc.NotificationServiceStub,
    caller: Caller,
    nid: str,
    action: int,
    at: datetime | None = None,
) -> svc.TrackEngagementResponse:
    request = svc.TrackEngagementRequest(id=nid, action=action)  # type: ignore[arg-type]
    if at is not None:
        request.event_time.CopyFrom(_ts(at))
    return stub.TrackEngagement(request, metadata=caller.metadata)


def test_engagement_moves_statuses_and_counts_once(
    stub: svc_grpc.NotificationServiceStub, sent: Sent
) -> None:
    nid = sent.ids["hook-1"]
    delivered_at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    first = _track(stub, sent.shop, nid, pb.ENGAGEMENT_ACTION_DELIVERED, delivered_at)
    assert first.recorded
    assert first.notification.status == S.NOTIFICATION_STATUS_DELIVERED
    again = _track(stub, sent.shop, nid, pb.ENGAGEMENT_ACTION_DELIVERED)
    assert not again.recorded
    assert again.notification == _get(stub, sent.shop, nid)

    opened = _track(stub, sent.shop, nid, pb.ENGAGEMENT_ACTION_OPENED)
    assert (opened.recorded, opened.notification.status) == (True, S.NOTIFICATION_STATUS_READ)
    clicked = _track(stub, sent.crm, nid, pb.ENGAGEMENT_ACTION_CLICKED)  # any service of the tenant
    assert (clicked.recorded, clicked.notification.status) == (True, S.NOTIFICATION_STATUS_READ)
    dismissed = _track(stub, sent.shop, nid, pb.ENGAGEMENT_ACTION_DISMISSED)
    assert dismissed.recorded
    for action in (pb.ENGAGEMENT_ACTION_OPENED, pb.ENGAGEMENT_ACTION_CLICKED):
        assert not _track(stub, sent.shop, nid, action).recorded

    record = _get(stub, sent.shop, nid)
    engagements = {e.action: _dt(e.time) for e in record.engagements}
    assert set(engagements) == {
        pb.ENGAGEMENT_ACTION_DELIVERED,
        pb.ENGAGEMENT_ACTION_OPENED,
        pb.ENGAGEMENT_ACTION_CLICKED,
        pb.ENGAGEMENT_ACTION_DISMISSED,
    }
    assert engagements[pb.ENGAGEMENT_ACTION_DELIVERED] == delivered_at
    assert [c.status for c in record.status_history][-2:] == [
        S.NOTIFICATION_STATUS_DELIVERED,
        S.NOTIFICATION_STATUS_READ,
    ]
    assert record.attempts[0].provider == "webhook"


def test_an_open_in_the_inbox_reads_it_and_a_dismissal_does_not(
    stub: svc_grpc.NotificationServiceStub, sent: Sent
) -> None:
    def unread() -> int:
        return stub.GetUnreadCount(
            svc.GetUnreadCountRequest(user_id="carol"), metadata=sent.crm.metadata
        ).unread_count

    before = unread()
    opened = _track(stub, sent.crm, sent.ids["inbox-1"], pb.ENGAGEMENT_ACTION_OPENED)
    assert opened.notification.status == S.NOTIFICATION_STATUS_READ
    assert unread() == before - 1
    marked = stub.MarkAsRead(
        svc.MarkAsReadRequest(ids=[sent.ids["inbox-1"]]), metadata=sent.crm.metadata
    )
    assert marked.marked_count == 0
    dismissed = _track(stub, sent.crm, sent.ids["inbox-2"], pb.ENGAGEMENT_ACTION_DISMISSED)
    assert dismissed.recorded
    assert dismissed.notification.status == S.NOTIFICATION_STATUS_DELIVERED
    assert unread() == before - 1


def test_engagement_refusals(stub: svc_grpc.NotificationServiceStub, sent: Sent) -> None:
    error = _refused(
        lambda: _track(stub, sent.shop, sent.ids["hook-gone"], pb.ENGAGEMENT_ACTION_OPENED)
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "NOT_SENT"
    for nid, caller in (("no-such-id", sent.shop), (sent.ids["hook-2"], sent.acme)):
        error = _refused(lambda: _track(stub, caller, nid, pb.ENGAGEMENT_ACTION_OPENED))  # noqa: B023
        assert error.code() == grpc.StatusCode.NOT_FOUND
    hook = sent.ids["hook-2"]
    future = datetime.now(UTC) + timedelta(hours=1)
    # Before the notification existed (it was created moments ago).
    past = datetime.now(UTC) - timedelta(days=1)
    for request, fields in (
        (svc.TrackEngagementRequest(id=hook), {"action"}),
        (svc.TrackEngagementRequest(id=hook, action=99), {"action"}),  # type: ignore[arg-type]
        (svc.TrackEngagementRequest(action=pb.ENGAGEMENT_ACTION_OPENED), {"id"}),
        (
            svc.TrackEngagementRequest(
                id=hook, action=pb.ENGAGEMENT_ACTION_OPENED, event_time=_ts(future)
            ),
            {"event_time"},
        ),
        (
            svc.TrackEngagementRequest(
                id=hook, action=pb.ENGAGEMENT_ACTION_OPENED, event_time=_ts(past)
            ),
            {"event_time"},
        ),
    ):
        error = _refused(
            lambda r=request: stub.TrackEngagement(r, metadata=sent.shop.metadata)  # type: ignore[misc]
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(field_violations(error)) == fields
    # None of that recorded anything.
    assert list(_get(stub, sent.shop, hook).engagements) == []


# -- ListNotifications ------------------------------------------------------------------------


def _list_all(
    stub: svc_grpc.NotificationServiceStub, caller: Caller, request: svc.ListNotificationsRequest
) -> list[list[str]]:
    pages: list[list[str]] = []
    while True:
        response = stub.ListNotifications(request, metadata=caller.metadata)
        pages.append([n.id for n in response.notifications])
        if not response.next_page_token:
            return pages
        request.page_token = response.next_page_token


def test_list_notifications_filters_and_pages(
    stub: svc_grpc.NotificationServiceStub, sent: Sent
) -> None:
    records = [_get(stub, sent.shop, nid) for nid in sent.ids.values()]

    def expect(keep: Callable[[pb.Notification], bool]) -> list[str]:
        kept = [n for n in records if keep(n)]
        return [n.id for n in sorted(kept, key=lambda n: (_dt(n.create_time), n.id), reverse=True)]

    created = sorted(_dt(n.create_time) for n in records)
    middle = created[4]
    cases: list[tuple[svc.ListNotificationsRequest, Callable[[pb.Notification], bool]]] = [
        (svc.ListNotificationsRequest(), lambda n: True),
        (svc.ListNotificationsRequest(user_id="alice"), lambda n: n.user_id == "alice"),
        (
            svc.ListNotificationsRequest(statuses=[S.NOTIFICATION_STATUS_FAILED]),
            lambda n: n.status == S.NOTIFICATION_STATUS_FAILED,
        ),
        (
            svc.ListNotificationsRequest(
                statuses=[S.NOTIFICATION_STATUS_SENT, S.NOTIFICATION_STATUS_DELIVERED]
            ),
            lambda n: n.status in (S.NOTIFICATION_STATUS_SENT, S.NOTIFICATION_STATUS_DELIVERED),
        ),
        (
            svc.ListNotificationsRequest(channel=pb.CHANNEL_IN_APP),
            lambda n: n.channel == pb.CHANNEL_IN_APP,
        ),
        (svc.ListNotificationsRequest(category="mention"), lambda n: n.category == "mention"),
        (
            svc.ListNotificationsRequest(priority=pb.PRIORITY_HIGH),
            lambda n: n.priority == pb.PRIORITY_HIGH,
        ),
        (svc.ListNotificationsRequest(caller_service="crm"), lambda n: n.caller_service == "crm"),
        (
            svc.ListNotificationsRequest(start_time=_ts(middle)),
            lambda n: _dt(n.create_time) >= middle,
        ),
        (
            svc.ListNotificationsRequest(end_time=_ts(middle)),
            lambda n: _dt(n.create_time) < middle,
        ),
        (
            svc.ListNotificationsRequest(
                user_id="alice", caller_service="shop", priority=pb.PRIORITY_MEDIUM
            ),
            lambda n: n.user_id == "alice" and n.priority == pb.PRIORITY_MEDIUM,
        ),
    ]
    for request, keep in cases:
        expected = expect(keep)
        assert expected, request
        request.page_size = 2
        pages = _list_all(stub, sent.shop, request)
        assert [nid for page in pages for nid in page] == expected, request
        assert all(len(page) == 2 for page in pages[:-1])
    # The full record comes with each.
    (listed,) = stub.ListNotifications(
        svc.ListNotificationsRequest(user_id="bob"), metadata=sent.shop.metadata
    ).notifications
    assert listed == _get(stub, sent.shop, sent.ids["hook-tpl"])
    # Another tenant sees none of them.
    theirs = _list_all(stub, sent.acme, svc.ListNotificationsRequest(caller_service="crm"))
    assert not set(sent.ids.values()) & {nid for page in theirs for nid in page}


def test_list_notifications_bad_input(stub: svc_grpc.NotificationServiceStub, sent: Sent) -> None:
    first = stub.ListNotifications(
        svc.ListNotificationsRequest(user_id="alice", page_size=1), metadata=sent.shop.metadata
    )
    assert first.next_page_token
    now = datetime.now(UTC)
    for request, field in (
        (
            svc.ListNotificationsRequest(user_id="bob", page_token=first.next_page_token),
            "page_token",
        ),
        (svc.ListNotificationsRequest(page_token="not-a-token"), "page_token"),
        (svc.ListNotificationsRequest(page_size=1001), "page_size"),
        (svc.ListNotificationsRequest(page_size=-1), "page_size"),
        (svc.ListNotificationsRequest(statuses=[99]), "statuses[0]"),  # type: ignore[list-item]
        (svc.ListNotificationsRequest(channel=42), "channel"),  # type: ignore[arg-type]
        (svc.ListNotificationsRequest(priority=42), "priority"),  # type: ignore[arg-type]
        (
            svc.ListNotificationsRequest(start_time=_ts(now), end_time=_ts(now)),
            "end_time",
        ),
    ):
        error = _refused(
            lambda r=request: stub.ListNotifications(r, metadata=sent.shop.metadata)  # type: ignore[misc]
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert field in field_violations(error), request
    sizes = [
        len(
            stub.ListNotifications(
                svc.ListNotificationsRequest(page_size=size), metadata=sent.shop.metadata
            ).notifications
        )
        for size in (0, 1, 1000)
    ]
    assert sizes == [len(sent.ids), 1, len(sent.ids)]


# -- GetStats ---------------------------------------------------------------------------------


def test_get_stats_agrees_with_what_was_sent(
    stub: svc_grpc.NotificationServiceStub, sent: Sent
) -> None:
    records = [_get(stub, sent.shop, nid) for nid in sent.ids.values()]
    response = stub.GetStats(
        svc.GetStatsRequest(start_time=_ts(sent.started)), metadata=sent.shop.metadata
    )

    def accepting(n: pb.Notification) -> pb.DeliveryAttempt | None:
        return next((a for a in n.attempts if a.outcome == pb.ATTEMPT_OUTCOME_ACCEPTED), None)

    def key(n: pb.Notification) -> tuple[int, str, str]:
        # The last provider to try it on its channel: the one that accepted it, or failed it.
        tried = [
            a.provider
            for a in n.attempts
            if a.provider and a.channel in (n.channel, pb.CHANNEL_UNSPECIFIED)
        ]
        return (n.channel, tried[-1] if tried else "", n.category)

    by_group: dict[tuple[int, str, str], list[pb.Notification]] = {}
    for n in records:
        by_group.setdefault(key(n), []).append(n)
    # The webhook that answered 410 counts against the webhook provider.
    assert sorted(by_group) == [
        (pb.CHANNEL_WEBHOOK, "webhook", "order_shipped"),
        (pb.CHANNEL_IN_APP, "inbox", "mention"),
    ]
    groups = {(g.channel, g.provider, g.category): g for g in response.groups}
    assert set(groups) == set(by_group)
    assert groups[pb.CHANNEL_WEBHOOK, "webhook", "order_shipped"].success_rate < 1.0

    def check(stats: svc.DeliveryStats, members: list[pb.Notification]) -> None:
        assert stats.total_count == len(members)
        counts = Counter(n.status for n in members)
        assert {c.status: c.count for c in stats.status_counts} == dict(counts)
        accepted = [n for n in members if n.status in ACCEPTED]
        decided = len(accepted) + counts[S.NOTIFICATION_STATUS_FAILED]
        assert stats.success_rate == pytest.approx(len(accepted) / decided)
        latencies = []
        for n in accepted:
            attempt = accepting(n)
            assert attempt is not None
            took = _dt(attempt.end_time) - _dt(n.create_time)
            latencies.append(took.total_seconds() * 1000)
        if latencies:
            for fraction, figure in (
                (0.5, stats.delivery_latency_p50_ms),
                (0.95, stats.delivery_latency_p95_ms),
                (0.99, stats.delivery_latency_p99_ms),
            ):
                assert figure == pytest.approx(percentile_cont(latencies, fraction), abs=0.01)
        else:
            assert stats.delivery_latency_p50_ms == 0
        engaged = [{e.action for e in n.engagements} for n in accepted]
        opened = sum(
            1
            for n, actions in zip(accepted, engaged, strict=True)
            if actions & {pb.ENGAGEMENT_ACTION_OPENED, pb.ENGAGEMENT_ACTION_CLICKED}
            or n.status == S.NOTIFICATION_STATUS_READ
        )
        clicked = sum(1 for actions in engaged if pb.ENGAGEMENT_ACTION_CLICKED in actions)
        assert (stats.opened_count, stats.clicked_count) == (opened, clicked)
        if accepted:
            assert stats.open_rate == pytest.approx(opened / len(accepted))
            assert stats.click_rate == pytest.approx(clicked / len(accepted))

    for group_key, members in by_group.items():
        check(groups[group_key], members)
    assert (response.total.channel, response.total.provider) == (pb.CHANNEL_UNSPECIFIED, "")
    check(response.total, records)

    only_in_app = stub.GetStats(
        svc.GetStatsRequest(start_time=_ts(sent.started), channel=pb.CHANNEL_IN_APP),
        metadata=sent.shop.metadata,
    )
    assert [g.provider for g in only_in_app.groups] == ["inbox"]
    assert only_in_app.total.total_count == 3
    later = stub.GetStats(
        svc.GetStatsRequest(
            start_time=_ts(sent.started - timedelta(days=1)), end_time=_ts(sent.started)
        ),
        metadata=sent.shop.metadata,
    )
    assert (list(later.groups), later.total.total_count) == ([], 0)


def test_get_stats_bad_input(stub: svc_grpc.NotificationServiceStub, sent: Sent) -> None:
    now = datetime.now(UTC)
    for request, field in (
        (svc.GetStatsRequest(), "start_time"),
        (svc.GetStatsRequest(start_time=_ts(now), end_time=_ts(now)), "end_time"),
        (
            svc.GetStatsRequest(
                start_time=_ts(now - timedelta(days=100)), end_time=_ts(now - timedelta(days=1))
            ),
            "end_time",
        ),
        (svc.GetStatsRequest(start_time=_ts(now - timedelta(days=93))), "start_time"),
        (svc.GetStatsRequest(start_time=_ts(now), channel=42), "channel"),  # type: ignore[arg-type]
    ):
        error = _refused(
            lambda r=request: stub.GetStats(r, metadata=sent.shop.metadata)  # type: ignore[misc]
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert field in field_violations(error), request
