"""Webhook secret rotation through the real server: `notifyd secrets rotate` for a tenant, and a
recipient endpoint given a new secret for the same URL. During the overlap a delivery carries a
signature by each secret, each verifiable alone with the reference library."""

from __future__ import annotations

import base64
import re
import subprocess
import uuid

import grpc
import pytest
from standardwebhooks.webhooks import Webhook

from interfaces.grpc.gen.notify.v1 import notification_pb2 as npb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as nsvc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as nsvc_grpc
from interfaces.grpc.gen.notify.v1 import recipient_service_pb2 as pb
from interfaces.grpc.gen.notify.v1 import recipient_service_pb2_grpc as pb_grpc
from tests.e2e.harness import NOTIFYD, Caller, Notifyd, ReceivedWebhook, WebhookReceiver
from tests.e2e.helpers import eventually

pytestmark = pytest.mark.e2e

STRANGER = "whsec_" + base64.b64encode(b"nobody was ever given this key!!").decode()


def _secret(text: str) -> str:
    return "whsec_" + base64.b64encode(text.encode().ljust(32, b".")).decode()


def _rotate(notifyd: Notifyd, tenant: str, *extra: str) -> dict[str, str]:
    out = notifyd.cli("secrets", "rotate", "--tenant", tenant, *extra)
    return dict(re.findall(r"^([a-z ]+):\s+(\S+)$", out, re.MULTILINE))


def _fresh_tenant(notifyd: Notifyd) -> Caller:
    # A tenant of its own: the server caches a tenant's secrets for a minute once it signs for
    # it, and this test must see the rotation at once.
    return notifyd.issue_key(f"rot-{uuid.uuid4().hex[:12]}", "svc")


def _send_webhook(
    stub: nsvc_grpc.NotificationServiceStub, caller: Caller, user: str, url: str
) -> str:
    return str(
        stub.SendNotification(
            nsvc.SendNotificationRequest(
                request_id=f"req-{uuid.uuid4()}",
                user_id=user,
                channel=npb.CHANNEL_WEBHOOK,
                category="security",
                content=npb.Content(title="Key rotated", body="Both signatures, please"),
                address=npb.Address(webhook_url=url),
            ),
            metadata=caller.metadata,
        ).notification.id
    )


def _received(receiver: WebhookReceiver, notification_id: str) -> ReceivedWebhook:
    eventually(
        lambda: [h for h in receiver.received if h.headers.get("webhook-id") == notification_id],
        lambda found: len(found) == 1,
    )
    [hook] = [h for h in receiver.received if h.headers["webhook-id"] == notification_id]
    return hook


def _signatures(hook: ReceivedWebhook) -> list[str]:
    return hook.headers["webhook-signature"].split(" ")


def _refused(secret: str, hook: ReceivedWebhook) -> None:
    with pytest.raises(Exception, match=r"(?i)signature"):
        Webhook(secret).verify(hook.body, hook.headers)


def test_a_rotated_tenant_secret_signs_beside_the_new_one(
    notifyd: Notifyd, stub: nsvc_grpc.NotificationServiceStub, webhook_receiver: WebhookReceiver
) -> None:
    caller = _fresh_tenant(notifyd)
    rotated = _rotate(notifyd, caller.tenant)
    new = rotated["webhook secret"]
    assert new.startswith("whsec_")
    assert new != caller.webhook_secret
    assert rotated["tenant"] == caller.tenant

    sent = _send_webhook(stub, caller, "user-1", webhook_receiver.url)
    hook = _received(webhook_receiver, sent)

    assert len(_signatures(hook)) == 2
    # A receiver already on the new secret and one still on the old both accept it.
    assert Webhook(new).verify(hook.body, hook.headers)["data"]["id"] == sent
    assert Webhook(caller.webhook_secret).verify(hook.body, hook.headers)["data"]["id"] == sent
    _refused(STRANGER, hook)


def test_a_rotation_without_overlap_drops_the_old_secret_at_once(
    notifyd: Notifyd, stub: nsvc_grpc.NotificationServiceStub, webhook_receiver: WebhookReceiver
) -> None:
    caller = _fresh_tenant(notifyd)
    new = _rotate(notifyd, caller.tenant, "--overlap-hours", "0")["webhook secret"]

    hook = _received(webhook_receiver, _send_webhook(stub, caller, "user-1", webhook_receiver.url))

    assert len(_signatures(hook)) == 1
    Webhook(new).verify(hook.body, hook.headers)
    _refused(caller.webhook_secret, hook)


def test_rotating_an_unknown_tenant_fails_and_says_so(notifyd: Notifyd) -> None:
    done = subprocess.run(
        [*NOTIFYD, "secrets", "rotate", "--tenant", "no-such-tenant"],
        env=notifyd.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "no-such-tenant" in done.stderr
    assert "not found" in done.stderr


def test_a_new_secret_for_the_same_endpoint_signs_beside_the_old_one(
    channel: grpc.Channel,
    stub: nsvc_grpc.NotificationServiceStub,
    acme: Caller,
    webhook_receiver: WebhookReceiver,
) -> None:
    recipients = pb_grpc.RecipientServiceStub(channel)
    user = f"user-{uuid.uuid4()}"
    old, new = _secret(f"old {user[:20]}"), _secret(f"new {user[:20]}")
    for secret in (old, new):
        recipients.UpsertRecipient(
            pb.UpsertRecipientRequest(
                recipient=pb.Recipient(
                    user_id=user,
                    webhook=pb.WebhookEndpoint(url=webhook_receiver.url, secret=secret),
                )
            ),
            metadata=acme.metadata,
        )
    got = recipients.GetRecipient(
        pb.GetRecipientRequest(user_id=user), metadata=acme.metadata
    ).recipient
    assert got.webhook.secret == "", "secrets never leave the server"

    hook = _received(webhook_receiver, _send_webhook(stub, acme, user, webhook_receiver.url))

    assert len(_signatures(hook)) == 2
    Webhook(new).verify(hook.body, hook.headers)
    Webhook(old).verify(hook.body, hook.headers)
    _refused(acme.webhook_secret, hook)
