"""RecipientService and CategoryService through the real server: the directory's life from
upsert to erasure, bad input that stores nothing, and a recipient's own webhook secret."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from standardwebhooks.webhooks import Webhook

from interfaces.grpc.gen.notify.v1 import category_service_pb2 as cpb
from interfaces.grpc.gen.notify.v1 import category_service_pb2_grpc as cpb_grpc
from interfaces.grpc.gen.notify.v1 import notification_pb2 as npb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as nsvc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as nsvc_grpc
from interfaces.grpc.gen.notify.v1 import recipient_service_pb2 as pb
from interfaces.grpc.gen.notify.v1 import recipient_service_pb2_grpc as pb_grpc
from tests.e2e.harness import Caller, Notifyd, WebhookReceiver
from tests.e2e.helpers import eventually, field_violations
from tests.e2e.test_grpcurl import grpcurl

pytestmark = pytest.mark.e2e

OWN_SECRET = "whsec_" + base64.b64encode(b"a recipient's own secret, 32 by").decode()


@pytest.fixture(scope="module")
def recipients(channel: grpc.Channel) -> pb_grpc.RecipientServiceStub:
    return pb_grpc.RecipientServiceStub(channel)


@pytest.fixture(scope="module")
def categories(channel: grpc.Channel) -> cpb_grpc.CategoryServiceStub:
    return cpb_grpc.CategoryServiceStub(channel)


def _user() -> str:
    return f"user-{uuid.uuid4()}"


def _ada(user: str, **overrides: object) -> pb.Recipient:
    fields: dict[str, object] = {
        "user_id": user,
        "email": "ada@example.com",
        "phone": "+41791234567",
        "devices": [pb.PushDevice(platform=pb.DEVICE_PLATFORM_IOS, token="tok-a")],
        "webhook": pb.WebhookEndpoint(url="https://hooks.example.com/ada", secret=OWN_SECRET),
        "locale": "de-CH",
        "time_zone": "Europe/Zurich",
    }
    fields.update(overrides)
    return pb.Recipient(**fields)  # type: ignore[arg-type]


def _refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert isinstance(error, grpc.RpcError)
    return error


def _get(stub: pb_grpc.RecipientServiceStub, caller: Caller, user: str) -> pb.Recipient:
    response: pb.GetRecipientResponse = stub.GetRecipient(
        pb.GetRecipientRequest(user_id=user), metadata=caller.metadata
    )
    return response.recipient


def _in(delta: timedelta) -> Timestamp:
    at = Timestamp()
    at.FromDatetime(datetime.now(UTC) + delta)
    return at


def _send(
    stub: nsvc_grpc.NotificationServiceStub, caller: Caller, user: str, **kw: object
) -> npb.Notification:
    response: nsvc.SendNotificationResponse = stub.SendNotification(
        nsvc.SendNotificationRequest(
            request_id=f"req-{uuid.uuid4()}",
            user_id=user,
            channel=npb.CHANNEL_IN_APP,
            category="mention",
            content=npb.Content(title="Secret plans", body="for Ada only"),
            **kw,  # type: ignore[arg-type]
        ),
        metadata=caller.metadata,
    )
    return response.notification


def _notification(
    stub: nsvc_grpc.NotificationServiceStub, caller: Caller, nid: str
) -> npb.Notification:
    response: nsvc.GetNotificationResponse = stub.GetNotification(
        nsvc.GetNotificationRequest(id=nid), metadata=caller.metadata
    )
    return response.notification


def test_a_recipients_life_from_upsert_to_erasure(
    recipients: pb_grpc.RecipientServiceStub,
    stub: nsvc_grpc.NotificationServiceStub,
    acme: Caller,
    globex: Caller,
) -> None:
    user = _user()
    created = recipients.UpsertRecipient(
        pb.UpsertRecipientRequest(recipient=_ada(user)), metadata=acme.metadata
    )
    assert created.created
    again = recipients.UpsertRecipient(
        pb.UpsertRecipientRequest(recipient=_ada(user, locale="fr_ch")), metadata=acme.metadata
    )
    assert not again.created

    got = _get(recipients, acme, user)
    assert (got.email, got.phone, got.locale, got.time_zone) == (
        "ada@example.com",
        "+41791234567",
        "fr-CH",
        "Europe/Zurich",
    )
    assert [(d.platform, d.token) for d in got.devices] == [(pb.DEVICE_PLATFORM_IOS, "tok-a")]
    assert got.webhook.url == "https://hooks.example.com/ada"
    assert got.webhook.has_secret
    assert got.webhook.secret == "", "the secret is input only"
    assert got.create_time.ToDatetime() <= got.update_time.ToDatetime()
    # Another tenant's recipient of the same user id does not exist for this caller.
    error = _refused(lambda: _get(recipients, globex, user))
    assert error.code() == grpc.StatusCode.NOT_FOUND

    # Sent before any preferences exist, so no quiet hours hold them: one is delivered, one
    # waits for its scheduled time (and is erased before it).
    sent = _send(stub, acme, user)
    held = _send(stub, acme, user, schedule_time=_in(timedelta(hours=1)))
    eventually(
        lambda: _notification(stub, acme, sent.id),
        lambda n: n.status == npb.NOTIFICATION_STATUS_DELIVERED,
    )

    prefs = pb.Preferences(
        channels=[pb.ChannelPreference(category="promo", channel=npb.CHANNEL_EMAIL)],
        quiet_hours=pb.QuietHours(start="22:00", end="07:00"),
        caps=[pb.FrequencyCap(category="promo", per_hour=1, per_day=3)],
    )
    updated = recipients.UpdatePreferences(
        pb.UpdatePreferencesRequest(user_id=user, preferences=prefs), metadata=acme.metadata
    ).recipient
    assert updated.preferences == prefs
    assert updated.email == "ada@example.com", "the profile is kept"

    unsubscribed = recipients.UnsubscribeFromMarketing(
        pb.UnsubscribeFromMarketingRequest(user_id=user), metadata=acme.metadata
    ).recipient
    assert unsubscribed.preferences.marketing_opt_out
    assert unsubscribed.preferences.quiet_hours == prefs.quiet_hours

    # An upsert without preferences keeps them.
    recipients.UpsertRecipient(
        pb.UpsertRecipientRequest(recipient=_ada(user)), metadata=acme.metadata
    )
    assert _get(recipients, acme, user).preferences.marketing_opt_out

    erased = recipients.DeleteRecipient(
        pb.DeleteRecipientRequest(user_id=user), metadata=acme.metadata
    )
    assert (erased.erased_notification_count, erased.cancelled_notification_count) == (2, 1)
    record = _notification(stub, acme, sent.id)
    assert record.status == npb.NOTIFICATION_STATUS_DELIVERED, "the proof stays"
    assert record.content_hash == sent.content_hash
    assert (record.content.title, record.content.body) == ("", "")
    cancelled = _notification(stub, acme, held.id)
    assert cancelled.status == npb.NOTIFICATION_STATUS_CANCELLED
    assert (cancelled.content.title, cancelled.content.body) == ("", "")
    assert _refused(lambda: _get(recipients, acme, user)).code() == grpc.StatusCode.NOT_FOUND
    again_deleted = _refused(
        lambda: recipients.DeleteRecipient(
            pb.DeleteRecipientRequest(user_id=user), metadata=acme.metadata
        )
    )
    assert again_deleted.code() == grpc.StatusCode.NOT_FOUND


BAD_RECIPIENTS: list[tuple[str, dict[str, object], str]] = [
    ("invalid locale tag", {"locale": "english please"}, "recipient.locale"),
    ("invalid time zone", {"time_zone": "Mars/Olympus_Mons"}, "recipient.time_zone"),
    ("malformed phone", {"phone": "079 123 45 67"}, "recipient.phone"),
    ("malformed email", {"email": "ada@"}, "recipient.email"),
    (
        "empty device token",
        {"devices": [pb.PushDevice(platform=pb.DEVICE_PLATFORM_IOS, token="")]},
        "recipient.devices[0].token",
    ),
    (
        "unspecified device platform",
        {"devices": [pb.PushDevice(token="tok")]},
        "recipient.devices[0].platform",
    ),
    (
        "webhook not http",
        {"webhook": pb.WebhookEndpoint(url="file:///etc/passwd")},
        "recipient.webhook.url",
    ),
    (
        "short webhook secret",
        {"webhook": pb.WebhookEndpoint(url="https://h.example.com/", secret="whsec_QUJD")},
        "recipient.webhook.secret",
    ),
    (
        "quiet hours at 25:00",
        {"preferences": pb.Preferences(quiet_hours=pb.QuietHours(start="25:00", end="07:00"))},
        "recipient.preferences.quiet_hours.start",
    ),
    (
        "empty quiet hours window",
        {"preferences": pb.Preferences(quiet_hours=pb.QuietHours(start="22:00", end="22:00"))},
        "recipient.preferences.quiet_hours.end",
    ),
    ("missing user_id", {"user_id": ""}, "recipient.user_id"),
]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [(o, f) for _, o, f in BAD_RECIPIENTS],
    ids=[name for name, _, _ in BAD_RECIPIENTS],
)
def test_bad_recipients_are_refused_naming_the_field_and_store_nothing(
    recipients: pb_grpc.RecipientServiceStub, acme: Caller, overrides: dict[str, object], field: str
) -> None:
    user = _user()
    error = _refused(
        lambda: recipients.UpsertRecipient(
            pb.UpsertRecipientRequest(recipient=_ada(user, **overrides)), metadata=acme.metadata
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(error)
    assert _refused(lambda: _get(recipients, acme, user)).code() == grpc.StatusCode.NOT_FOUND


def test_a_bad_update_leaves_the_stored_recipient_unchanged(
    recipients: pb_grpc.RecipientServiceStub, acme: Caller
) -> None:
    user = _user()
    recipients.UpsertRecipient(
        pb.UpsertRecipientRequest(recipient=_ada(user)), metadata=acme.metadata
    )
    before = _get(recipients, acme, user)
    error = _refused(
        lambda: recipients.UpdatePreferences(
            pb.UpdatePreferencesRequest(
                user_id=user,
                preferences=pb.Preferences(
                    quiet_hours=pb.QuietHours(start="22:00", end="24:00"),
                    caps=[pb.FrequencyCap(category="promo", per_hour=-1)],
                ),
            ),
            metadata=acme.metadata,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {
        "preferences.quiet_hours.end",
        "preferences.caps[0].per_hour",
    }
    assert _get(recipients, acme, user) == before


def test_categories_put_get_and_page(
    categories: cpb_grpc.CategoryServiceStub, globex: Caller
) -> None:
    prefix = f"cat-{uuid.uuid4().hex[:8]}"
    for i in range(3):
        categories.PutCategory(
            cpb.PutCategoryRequest(
                category=cpb.Category(
                    name=f"{prefix}-{i}",
                    kind=cpb.CATEGORY_KIND_MARKETING,
                    per_hour_cap=1,
                    per_day_cap=2,
                    dedup_window_seconds=0,
                )
            ),
            metadata=globex.metadata,
        )
    got = categories.GetCategory(
        cpb.GetCategoryRequest(name=f"{prefix}-1"), metadata=globex.metadata
    ).category
    assert got.kind == cpb.CATEGORY_KIND_MARKETING
    assert got.cap_action == cpb.CAP_ACTION_SUPPRESS
    assert got.HasField("dedup_window_seconds")
    assert got.dedup_window_seconds == 0

    names: list[str] = []
    token = ""
    while True:
        page = categories.ListCategories(
            cpb.ListCategoriesRequest(page_size=2, page_token=token), metadata=globex.metadata
        )
        names += [c.name for c in page.categories]
        token = page.next_page_token
        if not token:
            break
    assert [n for n in names if n.startswith(prefix)] == [f"{prefix}-{i}" for i in range(3)]

    bad = _refused(
        lambda: categories.PutCategory(
            cpb.PutCategoryRequest(category=cpb.Category(name=prefix, per_hour_cap=-1)),
            metadata=globex.metadata,
        )
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(bad)) == {"category.kind", "category.per_hour_cap"}
    negative = _refused(
        lambda: categories.ListCategories(
            cpb.ListCategoriesRequest(page_size=-1), metadata=globex.metadata
        )
    )
    assert negative.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_recipient_endpoint_with_its_own_secret_signs_with_it(
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
                webhook=pb.WebhookEndpoint(url=webhook_receiver.url, secret=OWN_SECRET),
            )
        ),
        metadata=acme.metadata,
    )
    sent = stub.SendNotification(
        nsvc.SendNotificationRequest(
            request_id=f"req-{uuid.uuid4()}",
            user_id=user,
            channel=npb.CHANNEL_WEBHOOK,
            category="mention",
            content=npb.Content(title="Hi", body="there"),
            address=npb.Address(webhook_url=webhook_receiver.url),
        ),
        metadata=acme.metadata,
    ).notification
    eventually(lambda: len(webhook_receiver.received), lambda n: n >= 1)
    hook = webhook_receiver.received[0]
    assert hook.headers["webhook-id"] == sent.id
    payload = Webhook(OWN_SECRET).verify(hook.body, hook.headers)
    assert payload["data"]["user_id"] == user
    with pytest.raises(Exception, match=r"(?i)signature"):
        Webhook(acme.webhook_secret).verify(hook.body, hook.headers)


def test_grpcurl_lists_recipient_and_category_services(notifyd: Notifyd) -> None:
    done = grpcurl(notifyd, "list")
    assert done.returncode == 0, done.stderr
    assert {"notify.v1.RecipientService", "notify.v1.CategoryService"} <= set(done.stdout.split())


def test_grpcurl_upserts_and_reads_a_recipient(notifyd: Notifyd, acme: Caller) -> None:
    user = _user()
    auth = f"authorization: Bearer {acme.key}"
    body = json.dumps(
        {
            "recipient": {
                "user_id": user,
                "email": "grace@example.com",
                "webhook": {"url": "https://hooks.example.com/g", "secret": OWN_SECRET},
                "preferences": {"quiet_hours": {"start": "23:00", "end": "06:30"}},
            }
        }
    )
    done = grpcurl(
        notifyd, "notify.v1.RecipientService/UpsertRecipient", flags=("-H", auth, "-d", body)
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["created"] is True

    done = grpcurl(
        notifyd,
        "notify.v1.RecipientService/GetRecipient",
        flags=("-H", auth, "-d", json.dumps({"user_id": user})),
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)["recipient"]
    assert got["email"] == "grace@example.com"
    assert got["webhook"] == {"url": "https://hooks.example.com/g", "has_secret": True}
    assert got["preferences"]["quiet_hours"] == {"start": "23:00", "end": "06:30"}

    done = grpcurl(
        notifyd,
        "notify.v1.RecipientService/UpsertRecipient",
        flags=(
            "-H",
            auth,
            "-d",
            json.dumps({"recipient": {"user_id": user, "time_zone": "Nowhere/Land"}}),
        ),
    )
    assert done.returncode != 0
    assert "InvalidArgument" in done.stderr
    assert "recipient.time_zone" in done.stderr
