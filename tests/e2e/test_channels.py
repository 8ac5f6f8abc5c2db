"""Every channel end to end: the real notifyd process delivers through its providers to the
sandbox peers it started (NOTIFYD_SANDBOX), which speak each vendor's protocol. The peers'
magic addresses (an unregistered push token, a number that replied STOP, a gone endpoint)
drive the error paths, as they do for a newcomer in `notifyd dev`."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest

from interfaces.grpc.gen.notify.v1 import notification_pb2 as pb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as svc_grpc
from interfaces.grpc.gen.notify.v1 import recipient_service_pb2 as rsvc
from interfaces.grpc.gen.notify.v1 import recipient_service_pb2_grpc as rsvc_grpc
from tests.e2e.harness import Caller, Notifyd
from tests.e2e.helpers import error_reason, eventually, field_violations

SETTLED = {
    pb.NOTIFICATION_STATUS_SENT,
    pb.NOTIFICATION_STATUS_DELIVERED,
    pb.NOTIFICATION_STATUS_FAILED,
    pb.NOTIFICATION_STATUS_SUPPRESSED,
}
APNS_TOKEN = "a1" * 32


@pytest.fixture(scope="module")
def recipients(channel: grpc.Channel) -> rsvc_grpc.RecipientServiceStub:
    return rsvc_grpc.RecipientServiceStub(channel)


def _send(stub: svc_grpc.NotificationServiceStub, caller: Caller, **fields: Any) -> pb.Notification:
    request = svc.SendNotificationRequest(
        request_id=str(uuid.uuid4()),
        user_id=fields.pop("user_id", "user-" + uuid.uuid4().hex[:8]),
        category="order_shipped",
        **fields,
    )
    if not request.HasField("content") and not request.HasField("template"):
        request.content.CopyFrom(pb.Content(title="Shipped", body="Your order is on its way"))
    return stub.SendNotification(request, metadata=caller.metadata).notification


def _settled(stub: svc_grpc.NotificationServiceStub, caller: Caller, id: str) -> pb.Notification:
    def get() -> pb.Notification:
        request = svc.GetNotificationRequest(id=id)
        return stub.GetNotification(request, metadata=caller.metadata).notification

    return eventually(get, lambda n: n.status in SETTLED)


def _arrived(notifyd: Notifyd, peer: str, key: str, value: str) -> dict[str, Any]:
    return eventually(
        lambda: [e for e in notifyd.journal(peer) if e.get(key) == value],
        lambda found: len(found) > 0,
    )[0]


def test_email_goes_out_over_smtp_with_html_and_a_plain_text_alternative(
    stub: svc_grpc.NotificationServiceStub, acme: Caller, notifyd: Notifyd
) -> None:
    n = _send(
        stub,
        acme,
        channel=pb.CHANNEL_EMAIL,
        address=pb.Address(email="ada@example.com"),
        content=pb.Content(title="Your bill", body="Amount due: 10 EUR", html="<p>10 EUR</p>"),
    )
    done = _settled(stub, acme, n.id)
    assert done.status == pb.NOTIFICATION_STATUS_SENT, done.status_reason
    [attempt] = done.attempts
    assert (attempt.provider, attempt.channel) == ("smtp", pb.CHANNEL_EMAIL)
    mail = _arrived(notifyd, "smtp", "message_id", f"<{n.id}@notifyd>")
    assert mail["to"] == ["ada@example.com"]
    assert (mail["subject"], mail["text"].strip(), mail["html"].strip()) == (
        "Your bill",
        "Amount due: 10 EUR",
        "<p>10 EUR</p>",
    )


def test_sms_goes_out_through_the_first_sms_vendor(
    stub: svc_grpc.NotificationServiceStub, acme: Caller, notifyd: Notifyd
) -> None:
    n = _send(
        stub,
        acme,
        channel=pb.CHANNEL_SMS,
        address=pb.Address(phone="+14155550123"),
        content=pb.Content(body="Your code is 123456"),
    )
    done = _settled(stub, acme, n.id)
    assert done.status == pb.NOTIFICATION_STATUS_SENT, done.status_reason
    sms = _arrived(notifyd, "twilio", "reference", n.id)
    assert (sms["to"], sms["body"]) == ("+14155550123", "Your code is 123456")
    assert done.attempts[0].provider == "twilio"
    assert done.attempts[0].provider_message_id == sms["message_id"]


def test_a_number_that_replied_stop_fails_once_and_is_then_suppressed(
    stub: svc_grpc.NotificationServiceStub, acme: Caller
) -> None:
    stop = pb.Address(phone="+15005550004")
    first = _settled(stub, acme, _send(stub, acme, channel=pb.CHANNEL_SMS, address=stop).id)
    assert first.status == pb.NOTIFICATION_STATUS_FAILED
    assert first.attempts[-1].error_class == "PERMANENT"
    assert len(first.attempts) == 1, "a permanent failure is not retried"

    second = _send(stub, acme, channel=pb.CHANNEL_SMS, address=stop)
    assert second.status == pb.NOTIFICATION_STATUS_SUPPRESSED
    assert "suppressed" in second.status_reason


def test_push_is_routed_by_the_devices_platform(
    stub: svc_grpc.NotificationServiceStub,
    recipients: rsvc_grpc.RecipientServiceStub,
    acme: Caller,
    notifyd: Notifyd,
) -> None:
    for user, platform, token, peer in (
        ("push-android", rsvc.DEVICE_PLATFORM_ANDROID, "android-token-1", "fcm"),
        ("push-ios", rsvc.DEVICE_PLATFORM_IOS, APNS_TOKEN, "apns"),
    ):
        recipients.UpsertRecipient(
            rsvc.UpsertRecipientRequest(
                recipient=rsvc.Recipient(
                    user_id=user, devices=[rsvc.PushDevice(platform=platform, token=token)]
                )
            ),
            metadata=acme.metadata,
        )
        n = _send(stub, acme, channel=pb.CHANNEL_PUSH, user_id=user)
        done = _settled(stub, acme, n.id)
        assert done.status == pb.NOTIFICATION_STATUS_SENT, done.status_reason
        assert done.attempts[-1].provider == peer
        pushed = _arrived(notifyd, peer, "token", token)
        assert (pushed["title"], pushed["body"]) == ("Shipped", "Your order is on its way")


def test_an_unregistered_token_is_invalidated_and_the_chain_falls_back_to_email(
    stub: svc_grpc.NotificationServiceStub,
    recipients: rsvc_grpc.RecipientServiceStub,
    acme: Caller,
    notifyd: Notifyd,
) -> None:
    user = "push-dead-" + uuid.uuid4().hex[:6]
    recipients.UpsertRecipient(
        rsvc.UpsertRecipientRequest(
            recipient=rsvc.Recipient(
                user_id=user,
                email=f"{user}@example.com",
                devices=[
                    rsvc.PushDevice(platform=rsvc.DEVICE_PLATFORM_ANDROID, token="unregistered-1")
                ],
            )
        ),
        metadata=acme.metadata,
    )
    n = _send(
        stub, acme, channel=pb.CHANNEL_PUSH, user_id=user, fallback_channels=[pb.CHANNEL_EMAIL]
    )
    assert list(n.fallback_channels) == [pb.CHANNEL_EMAIL]
    done = _settled(stub, acme, n.id)

    assert done.status == pb.NOTIFICATION_STATUS_SENT, done.status_reason
    assert done.channel == pb.CHANNEL_EMAIL
    assert [(a.channel, a.provider, a.outcome) for a in done.attempts] == [
        (pb.CHANNEL_PUSH, "fcm", pb.ATTEMPT_OUTCOME_PERMANENT_FAILURE),
        (pb.CHANNEL_EMAIL, "smtp", pb.ATTEMPT_OUTCOME_ACCEPTED),
    ]
    assert any("falling back to EMAIL" in c.reason for c in done.status_history)
    _arrived(notifyd, "smtp", "message_id", f"<{n.id}@notifyd>")

    def device() -> rsvc.PushDevice:
        found = recipients.GetRecipient(
            rsvc.GetRecipientRequest(user_id=user), metadata=acme.metadata
        )
        return found.recipient.devices[0]

    assert eventually(device, lambda d: d.HasField("invalidate_time")).token == "unregistered-1"
    # With its only device dead, the next push goes straight to email, and says so.
    again = _send(
        stub, acme, channel=pb.CHANNEL_PUSH, user_id=user, fallback_channels=[pb.CHANNEL_EMAIL]
    )
    assert again.channel == pb.CHANNEL_EMAIL
    assert "PUSH skipped" in again.status_reason


def test_a_gone_webhook_endpoint_is_disabled_on_the_recipient(
    stub: svc_grpc.NotificationServiceStub,
    recipients: rsvc_grpc.RecipientServiceStub,
    acme: Caller,
    notifyd: Notifyd,
) -> None:
    user = "hook-gone-" + uuid.uuid4().hex[:6]
    url = f"{notifyd.sink_url}/gone"
    recipients.UpsertRecipient(
        rsvc.UpsertRecipientRequest(
            recipient=rsvc.Recipient(user_id=user, webhook=rsvc.WebhookEndpoint(url=url))
        ),
        metadata=acme.metadata,
    )
    done = _settled(stub, acme, _send(stub, acme, channel=pb.CHANNEL_WEBHOOK, user_id=user).id)
    assert done.status == pb.NOTIFICATION_STATUS_FAILED
    assert "410" in done.attempts[-1].error_message

    def endpoint() -> rsvc.WebhookEndpoint:
        found = recipients.GetRecipient(
            rsvc.GetRecipientRequest(user_id=user), metadata=acme.metadata
        )
        return found.recipient.webhook

    assert eventually(endpoint, lambda e: e.HasField("disable_time")).url == url
    with pytest.raises(grpc.RpcError) as caught:
        _send(stub, acme, channel=pb.CHANNEL_WEBHOOK, user_id=user)
    assert error_reason(caught.value) == "RECIPIENT_HAS_NO_ADDRESS"


BAD_ADDRESSES = [
    ("malformed email", pb.CHANNEL_EMAIL, pb.Address(email="not-an-email"), "address.email"),
    ("non-E.164 phone", pb.CHANNEL_SMS, pb.Address(phone="0151 1234567"), "address.phone"),
    ("empty device token", pb.CHANNEL_PUSH, pb.Address(device_token=" "), "address.device_token"),
    (
        "non-http webhook",
        pb.CHANNEL_WEBHOOK,
        pb.Address(webhook_url="gopher://x.example/"),
        "address.webhook_url",
    ),
]


@pytest.mark.parametrize(
    ("case", "channel_value", "address", "field"), BAD_ADDRESSES, ids=[c[0] for c in BAD_ADDRESSES]
)
def test_a_bad_address_is_invalid_argument_naming_the_field_and_nothing_is_queued(
    stub: svc_grpc.NotificationServiceStub,
    acme: Caller,
    notifyd: Notifyd,
    case: str,
    channel_value: int,
    address: pb.Address,
    field: str,
) -> None:
    before = notifyd.count_rows("acme")
    with pytest.raises(grpc.RpcError) as caught:
        _send(stub, acme, channel=channel_value, address=address)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
    assert field in field_violations(caught.value)
    assert notifyd.count_rows("acme") == before


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest",
        "http://localhost/x",
    ],
)
def test_a_private_webhook_target_is_refused_at_accept_time(
    strict_notifyd: Notifyd, url: str
) -> None:
    caller = strict_notifyd.callers["acme"]
    before = strict_notifyd.count_rows("acme")
    with grpc.insecure_channel(strict_notifyd.address) as ch:
        strict = svc_grpc.NotificationServiceStub(ch)
        with pytest.raises(grpc.RpcError) as caught:
            _send(strict, caller, channel=pb.CHANNEL_WEBHOOK, address=pb.Address(webhook_url=url))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not an allowed target" in field_violations(caught.value)["address.webhook_url"]
    assert strict_notifyd.count_rows("acme") == before


def test_an_unknown_fallback_channel_is_invalid_argument(
    stub: svc_grpc.NotificationServiceStub, acme: Caller
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _send(
            stub,
            acme,
            channel=pb.CHANNEL_EMAIL,
            address=pb.Address(email="ada@example.com"),
            fallback_channels=[pb.CHANNEL_UNSPECIFIED],
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "fallback_channels[0]" in field_violations(caught.value)


def test_operators_see_the_sandbox_deliveries_with_the_cli(
    stub: svc_grpc.NotificationServiceStub, acme: Caller, notifyd: Notifyd
) -> None:
    n = _send(stub, acme, channel=pb.CHANNEL_EMAIL, address=pb.Address(email="cli@example.com"))
    _settled(stub, acme, n.id)
    out = notifyd.cli("sandbox", "--peer", "smtp", "--limit", "500")
    [line] = [line for line in out.splitlines() if n.id in line]
    assert '"peer": "smtp"' in line
