"""The policy step through the real server: each decision is on the record (never a silent
drop), duplicates return the first notification, and an erased recipient is unreachable."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from interfaces.grpc.gen.notify.v1 import category_service_pb2 as cpb
from interfaces.grpc.gen.notify.v1 import category_service_pb2_grpc as cpb_grpc
from interfaces.grpc.gen.notify.v1 import notification_pb2 as npb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as nsvc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as nsvc_grpc
from interfaces.grpc.gen.notify.v1 import recipient_service_pb2 as pb
from interfaces.grpc.gen.notify.v1 import recipient_service_pb2_grpc as pb_grpc
from tests.e2e.harness import Caller, Notifyd, WebhookReceiver
from tests.e2e.helpers import error_reason, eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def recipients(channel: grpc.Channel) -> pb_grpc.RecipientServiceStub:
    return pb_grpc.RecipientServiceStub(channel)


@pytest.fixture(scope="module")
def categories(channel: grpc.Channel) -> cpb_grpc.CategoryServiceStub:
    return cpb_grpc.CategoryServiceStub(channel)


def _user() -> str:
    return f"user-{uuid.uuid4()}"


def _send(
    stub: nsvc_grpc.NotificationServiceStub,
    caller: Caller,
    user: str,
    request_id: str = "",
    **kw: object,
) -> nsvc.SendNotificationResponse:
    fields: dict[str, object] = {
        "request_id": request_id or f"req-{uuid.uuid4()}",
        "user_id": user,
        "channel": npb.CHANNEL_IN_APP,
        "category": "mention",
        "content": npb.Content(title="Hi", body="You were mentioned"),
    }
    fields.update(kw)
    response: nsvc.SendNotificationResponse = stub.SendNotification(
        nsvc.SendNotificationRequest(**fields),  # type: ignore[arg-type]
        metadata=caller.metadata,
    )
    return response


def _prefs(
    recipients: pb_grpc.RecipientServiceStub, caller: Caller, user: str, prefs: pb.Preferences
) -> None:
    recipients.UpdatePreferences(
        pb.UpdatePreferencesRequest(user_id=user, preferences=prefs), metadata=caller.metadata
    )


def _around_now() -> pb.QuietHours:
    """Quiet hours (UTC) from an hour ago to an hour from now, whatever the time of day."""
    now = datetime.now(UTC)
    return pb.QuietHours(
        start=f"{now - timedelta(hours=1):%H:%M}", end=f"{now + timedelta(hours=1):%H:%M}"
    )


def test_an_opt_out_is_a_suppressed_record_not_a_silent_drop(
    recipients: pb_grpc.RecipientServiceStub,
    stub: nsvc_grpc.NotificationServiceStub,
    acme: Caller,
) -> None:
    user = _user()
    _prefs(
        recipients,
        acme,
        user,
        pb.Preferences(channels=[pb.ChannelPreference(category="mention", enabled=False)]),
    )
    n = _send(stub, acme, user).notification
    assert n.status == npb.NOTIFICATION_STATUS_SUPPRESSED
    assert "opted out" in n.status_reason
    stored = stub.GetNotification(nsvc.GetNotificationRequest(id=n.id), metadata=acme.metadata)
    assert stored.notification.status == npb.NOTIFICATION_STATUS_SUPPRESSED
    unread = stub.GetUnreadCount(nsvc.GetUnreadCountRequest(user_id=user), metadata=acme.metadata)
    assert unread.unread_count == 0
    # Another category still reaches them.
    other = _send(stub, acme, user, category="security_alert").notification
    assert other.status == npb.NOTIFICATION_STATUS_QUEUED


def test_quiet_hours_hold_all_but_critical_transactional(
    recipients: pb_grpc.RecipientServiceStub,
    categories: cpb_grpc.CategoryServiceStub,
    stub: nsvc_grpc.NotificationServiceStub,
    acme: Caller,
) -> None:
    categories.PutCategory(
        cpb.PutCategoryRequest(
            category=cpb.Category(name="weekly_deals", kind=cpb.CATEGORY_KIND_MARKETING)
        ),
        metadata=acme.metadata,
    )
    user = _user()
    recipients.UpsertRecipient(
        pb.UpsertRecipientRequest(
            recipient=pb.Recipient(
                user_id=user, time_zone="UTC", preferences=pb.Preferences(quiet_hours=_around_now())
            )
        ),
        metadata=acme.metadata,
    )
    held = _send(stub, acme, user).notification
    assert held.status == npb.NOTIFICATION_STATUS_QUEUED
    assert "held for quiet hours" in held.status_reason
    critical = _send(stub, acme, user, priority=npb.PRIORITY_CRITICAL).notification
    assert "bypassed" in critical.status_reason
    promo = _send(
        stub, acme, user, category="weekly_deals", priority=npb.PRIORITY_CRITICAL
    ).notification
    assert "held for quiet hours" in promo.status_reason

    def status(nid: str) -> int:
        got = stub.GetNotification(nsvc.GetNotificationRequest(id=nid), metadata=acme.metadata)
        return got.notification.status

    eventually(lambda: status(critical.id), lambda s: s == npb.NOTIFICATION_STATUS_DELIVERED)
    assert status(held.id) == npb.NOTIFICATION_STATUS_QUEUED
    assert status(promo.id) == npb.NOTIFICATION_STATUS_QUEUED


def test_marketing_to_an_unsubscribed_recipient_is_suppressed(
    recipients: pb_grpc.RecipientServiceStub,
    categories: cpb_grpc.CategoryServiceStub,
    stub: nsvc_grpc.NotificationServiceStub,
    acme: Caller,
) -> None:
    categories.PutCategory(
        cpb.PutCategoryRequest(
            category=cpb.Category(name="newsletter", kind=cpb.CATEGORY_KIND_MARKETING)
        ),
        metadata=acme.metadata,
    )
    user = _user()
    recipients.UnsubscribeFromMarketing(
        pb.UnsubscribeFromMarketingRequest(user_id=user), metadata=acme.metadata
    )
    n = _send(stub, acme, user, category="newsletter").notification
    assert n.status == npb.NOTIFICATION_STATUS_SUPPRESSED
    assert n.status_reason == "recipient unsubscribed from marketing"


def test_a_frequency_cap_suppresses_the_one_over_it(
    categories: cpb_grpc.CategoryServiceStub,
    stub: nsvc_grpc.NotificationServiceStub,
    acme: Caller,
) -> None:
    categories.PutCategory(
        cpb.PutCategoryRequest(category=cpb.Category(name="digest", kind=1, per_hour_cap=2)),
        metadata=acme.metadata,
    )
    user = _user()
    statuses = [
        _send(
            stub, acme, user, category="digest", content=npb.Content(title="D", body=str(i))
        ).notification
        for i in range(3)
    ]
    assert [n.status for n in statuses] == [
        npb.NOTIFICATION_STATUS_QUEUED,
        npb.NOTIFICATION_STATUS_QUEUED,
        npb.NOTIFICATION_STATUS_SUPPRESSED,
    ]
    assert "at most 2 per hour" in statuses[2].status_reason


def test_a_duplicate_returns_the_first_notification_and_stores_nothing(
    notifyd: Notifyd,
    categories: cpb_grpc.CategoryServiceStub,
    stub: nsvc_grpc.NotificationServiceStub,
    acme: Caller,
) -> None:
    categories.PutCategory(
        cpb.PutCategoryRequest(category=cpb.Category(name="otp", kind=1, dedup_window_seconds=120)),
        metadata=acme.metadata,
    )
    user = _user()
    first = _send(stub, acme, user, category="otp")
    rows = notifyd.count_rows("acme")
    second = _send(stub, acme, user, request_id="dup-retry-" + user, category="otp")
    assert (second.deduplicated, second.notification.id) == (True, first.notification.id)
    assert notifyd.count_rows("acme") == rows
    # Its retry gets the same answer; other content is no duplicate.
    retry = _send(stub, acme, user, request_id="dup-retry-" + user, category="otp")
    assert (retry.replayed, retry.deduplicated) == (True, True)
    other = _send(stub, acme, user, category="otp", content=npb.Content(title="Hi", body="2"))
    assert not other.deduplicated


def test_erase_then_send_finds_no_address_and_stores_nothing(
    notifyd: Notifyd,
    recipients: pb_grpc.RecipientServiceStub,
    stub: nsvc_grpc.NotificationServiceStub,
    acme: Caller,
    webhook_receiver: WebhookReceiver,
) -> None:
    user = _user()
    recipients.UpsertRecipient(
        pb.UpsertRecipientRequest(
            recipient=pb.Recipient(
                user_id=user,
                webhook=pb.WebhookEndpoint(url=f"{webhook_receiver.url}/{user}"),
            )
        ),
        metadata=acme.metadata,
    )
    sent = _send(stub, acme, user, channel=npb.CHANNEL_WEBHOOK).notification
    assert sent.address.webhook_url == f"{webhook_receiver.url}/{user}"
    eventually(
        lambda: (
            stub.GetNotification(
                nsvc.GetNotificationRequest(id=sent.id), metadata=acme.metadata
            ).notification.status
        ),
        lambda s: s == npb.NOTIFICATION_STATUS_SENT,
    )
    recipients.DeleteRecipient(pb.DeleteRecipientRequest(user_id=user), metadata=acme.metadata)
    record = stub.GetNotification(
        nsvc.GetNotificationRequest(id=sent.id), metadata=acme.metadata
    ).notification
    assert record.status == npb.NOTIFICATION_STATUS_SENT
    assert record.address.webhook_url == ""
    assert record.HasField("erase_time")
    assert record.content_hash == sent.content_hash

    rows = notifyd.count_rows("acme")
    with pytest.raises(grpc.RpcError) as caught:
        _send(stub, acme, user, channel=npb.CHANNEL_WEBHOOK)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(caught.value) == "RECIPIENT_HAS_NO_ADDRESS"
    assert notifyd.count_rows("acme") == rows
