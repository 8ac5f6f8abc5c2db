"""The happy paths through the real server: in-app inbox and signed webhooks."""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from standardwebhooks.webhooks import Webhook

from interfaces.grpc.gen.notify.v1 import notification_pb2 as pb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as svc_grpc
from tests.e2e.harness import Caller, Notifyd, WebhookReceiver
from tests.e2e.helpers import eventually

pytestmark = pytest.mark.e2e


def _rid() -> str:
    return f"req-{uuid.uuid4()}"


def _get(stub: svc_grpc.NotificationServiceStub, caller: Caller, nid: str) -> pb.Notification:
    response = stub.GetNotification(svc.GetNotificationRequest(id=nid), metadata=caller.metadata)
    return response.notification


def test_in_app_is_delivered_counted_and_marked_read(
    stub: svc_grpc.NotificationServiceStub, acme: Caller
) -> None:
    user = f"user-{uuid.uuid4()}"
    sent = stub.SendNotification(
        svc.SendNotificationRequest(
            request_id=_rid(),
            user_id=user,
            channel=pb.CHANNEL_IN_APP,
            category="mention",
            content=pb.Content(title="You were mentioned", body="in #general"),
        ),
        metadata=acme.metadata,
    ).notification
    assert sent.status == pb.NOTIFICATION_STATUS_QUEUED
    assert sent.tenant_id == "acme"
    assert sent.caller_service == "orders"

    delivered = eventually(
        lambda: _get(stub, acme, sent.id),
        lambda n: n.status == pb.NOTIFICATION_STATUS_DELIVERED,
    )
    assert [c.status for c in delivered.status_history] == [
        pb.NOTIFICATION_STATUS_PENDING,
        pb.NOTIFICATION_STATUS_QUEUED,
        pb.NOTIFICATION_STATUS_SENDING,
        pb.NOTIFICATION_STATUS_SENT,
        pb.NOTIFICATION_STATUS_DELIVERED,
    ]
    assert delivered.attempts[0].outcome == pb.ATTEMPT_OUTCOME_ACCEPTED

    count = stub.GetUnreadCount(svc.GetUnreadCountRequest(user_id=user), metadata=acme.metadata)
    assert count.unread_count == 1

    marked = stub.MarkAsRead(svc.MarkAsReadRequest(ids=[sent.id]), metadata=acme.metadata)
    assert marked.marked_count == 1
    again = stub.MarkAsRead(svc.MarkAsReadRequest(ids=[sent.id]), metadata=acme.metadata)
    assert again.marked_count == 0
    count = stub.GetUnreadCount(svc.GetUnreadCountRequest(user_id=user), metadata=acme.metadata)
    assert count.unread_count == 0
    assert _get(stub, acme, sent.id).status == pb.NOTIFICATION_STATUS_READ


def test_webhook_is_signed_per_standard_webhooks(
    stub: svc_grpc.NotificationServiceStub, acme: Caller, webhook_receiver: WebhookReceiver
) -> None:
    sent = stub.SendNotification(
        svc.SendNotificationRequest(
            request_id=_rid(),
            user_id="user-7",
            channel=pb.CHANNEL_WEBHOOK,
            priority=pb.PRIORITY_HIGH,
            category="order_shipped",
            template=pb.TemplateReference(
                name="order_shipped", variables=_struct({"order_id": "A-1001", "name": "Ada"})
            ),
            address=pb.Address(webhook_url=webhook_receiver.url),
            metadata={"order": "A-1001"},
        ),
        metadata=acme.metadata,
    ).notification
    # A webhook template renders a JSON payload, carried as the content's data.
    assert sent.content.data["title"] == "Order A-1001 shipped"
    assert sent.template_name == "order_shipped"
    assert sent.template_version == 1

    final = eventually(
        lambda: _get(stub, acme, sent.id), lambda n: n.status == pb.NOTIFICATION_STATUS_SENT
    )
    assert len(webhook_receiver.received) == 1
    hook = webhook_receiver.received[0]
    # The library raises if the signature, id or timestamp do not check out.
    payload = Webhook(acme.webhook_secret).verify(hook.body, hook.headers)
    assert hook.headers["webhook-id"] == sent.id
    assert payload["type"] == "order_shipped"
    assert payload["data"]["payload"]["title"] == "Order A-1001 shipped"
    assert payload["data"]["metadata"] == {"order": "A-1001"}
    with pytest.raises(Exception, match=r"(?i)signature"):
        Webhook(notifyd_other_secret()).verify(hook.body, hook.headers)
    assert final.attempts[0].provider == "webhook"
    assert final.attempts[0].outcome == pb.ATTEMPT_OUTCOME_ACCEPTED


def test_webhook_retries_transient_failures_with_the_same_id(
    stub: svc_grpc.NotificationServiceStub, acme: Caller, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.statuses = [503, 500]
    sent = stub.SendNotification(
        svc.SendNotificationRequest(
            request_id=_rid(),
            user_id="user-8",
            channel=pb.CHANNEL_WEBHOOK,
            category="invoice_ready",
            content=pb.Content(title="Invoice", body="Your invoice is ready"),
            address=pb.Address(webhook_url=webhook_receiver.url),
        ),
        metadata=acme.metadata,
    ).notification
    final = eventually(
        lambda: _get(stub, acme, sent.id), lambda n: n.status == pb.NOTIFICATION_STATUS_SENT
    )
    assert [a.outcome for a in final.attempts] == [
        pb.ATTEMPT_OUTCOME_TRANSIENT_FAILURE,
        pb.ATTEMPT_OUTCOME_TRANSIENT_FAILURE,
        pb.ATTEMPT_OUTCOME_ACCEPTED,
    ]
    ids = {hook.headers["webhook-id"] for hook in webhook_receiver.received}
    assert ids == {sent.id}
    bodies = {hook.body for hook in webhook_receiver.received}
    assert len(bodies) == 1, "every retry must carry the same payload"


def test_webhook_gone_fails_permanently_without_retry(
    stub: svc_grpc.NotificationServiceStub, acme: Caller, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.statuses = [410]
    sent = stub.SendNotification(
        svc.SendNotificationRequest(
            request_id=_rid(),
            user_id="user-9",
            channel=pb.CHANNEL_WEBHOOK,
            category="invoice_ready",
            content=pb.Content(title="Invoice", body="ready"),
            address=pb.Address(webhook_url=webhook_receiver.url),
        ),
        metadata=acme.metadata,
    ).notification
    final = eventually(
        lambda: _get(stub, acme, sent.id), lambda n: n.status == pb.NOTIFICATION_STATUS_FAILED
    )
    assert len(final.attempts) == 1
    assert final.attempts[0].error_class == "PERMANENT"
    assert len(webhook_receiver.received) == 1


def test_scheduled_send_waits_for_its_time(
    stub: svc_grpc.NotificationServiceStub, acme: Caller
) -> None:
    when = Timestamp()
    when.FromDatetime(datetime.now(UTC) + timedelta(seconds=2))
    sent = stub.SendNotification(
        svc.SendNotificationRequest(
            request_id=_rid(),
            user_id="user-sched",
            channel=pb.CHANNEL_IN_APP,
            category="reminder",
            content=pb.Content(title="Reminder"),
            schedule_time=when,
        ),
        metadata=acme.metadata,
    ).notification
    time.sleep(1.0)
    assert _get(stub, acme, sent.id).status == pb.NOTIFICATION_STATUS_QUEUED
    final = eventually(
        lambda: _get(stub, acme, sent.id), lambda n: n.status == pb.NOTIFICATION_STATUS_DELIVERED
    )
    delivered_at = final.status_history[-1].time.ToDatetime(tzinfo=UTC)
    assert delivered_at >= when.ToDatetime(tzinfo=UTC)


def test_cancelled_notification_is_never_sent(
    stub: svc_grpc.NotificationServiceStub, acme: Caller, webhook_receiver: WebhookReceiver
) -> None:
    when = Timestamp()
    when.FromDatetime(datetime.now(UTC) + timedelta(seconds=1))
    sent = stub.SendNotification(
        svc.SendNotificationRequest(
            request_id=_rid(),
            user_id="user-cancel",
            channel=pb.CHANNEL_WEBHOOK,
            category="promo",
            content=pb.Content(title="Sale"),
            address=pb.Address(webhook_url=webhook_receiver.url),
            schedule_time=when,
        ),
        metadata=acme.metadata,
    ).notification
    cancelled = stub.CancelNotification(
        svc.CancelNotificationRequest(id=sent.id), metadata=acme.metadata
    ).notification
    assert cancelled.status == pb.NOTIFICATION_STATUS_CANCELLED
    time.sleep(1.5)
    assert webhook_receiver.received == []
    assert _get(stub, acme, sent.id).status == pb.NOTIFICATION_STATUS_CANCELLED


def test_idempotent_replay_returns_the_first_notification(
    stub: svc_grpc.NotificationServiceStub, acme: Caller, notifyd: Notifyd
) -> None:
    request = svc.SendNotificationRequest(
        request_id=_rid(),
        user_id="user-idem",
        channel=pb.CHANNEL_IN_APP,
        category="mention",
        content=pb.Content(title="Once"),
    )
    before = notifyd.count_rows("acme")
    first = stub.SendNotification(request, metadata=acme.metadata)
    second = stub.SendNotification(request, metadata=acme.metadata)
    assert not first.replayed
    assert second.replayed
    assert second.notification.id == first.notification.id
    assert notifyd.count_rows("acme") == before + 1


def test_bulk_send_accepts_and_refuses_per_recipient(
    stub: svc_grpc.NotificationServiceStub, acme: Caller, webhook_receiver: WebhookReceiver
) -> None:
    response = stub.BulkSend(
        svc.BulkSendRequest(
            request_id=_rid(),
            channel=pb.CHANNEL_WEBHOOK,
            category="order_shipped",
            template=pb.TemplateReference(name="order_shipped", variables=_struct({"name": "all"})),
            recipients=[
                svc.BulkRecipient(
                    user_id="b1",
                    address=pb.Address(webhook_url=webhook_receiver.url),
                    variables=_struct({"order_id": "1"}),
                ),
                svc.BulkRecipient(
                    user_id="b2",
                    address=pb.Address(webhook_url="ftp://example.com/x"),
                    variables=_struct({"order_id": "2"}),
                ),
                svc.BulkRecipient(
                    user_id="b3", address=pb.Address(webhook_url=webhook_receiver.url)
                ),
            ],
        ),
        metadata=acme.metadata,
    )
    assert response.job_id
    assert (response.accepted_count, response.refused_count) == (1, 2)
    ok, bad_url, no_var = response.results
    assert ok.notification_id
    assert ok.status == pb.NOTIFICATION_STATUS_QUEUED
    assert bad_url.refusal.code == "INVALID_ARGUMENT"
    assert bad_url.refusal.field == "recipients[1].address.webhook_url"
    assert no_var.refusal.field == "recipients[2].template.variables.order_id"
    final = eventually(
        lambda: _get(stub, acme, ok.notification_id),
        lambda n: n.status == pb.NOTIFICATION_STATUS_SENT,
    )
    assert final.bulk_job_id == response.job_id
    assert json.loads(webhook_receiver.received[0].body)["data"]["payload"]["title"] == (
        "Order 1 shipped"
    )


def _struct(values: dict[str, object]) -> Struct:
    s = Struct()
    s.update(values)
    return s


def notifyd_other_secret() -> str:
    return "whsec_" + base64.b64encode(b"not the tenant's secret, 32 byte").decode()
