"""Every caller mistake gets the right status, names the field, and writes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import grpc
import pytest
from google.protobuf.struct_pb2 import Struct

from interfaces.grpc.gen.notify.v1 import notification_pb2 as pb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as svc_grpc
from interfaces.grpc.gen.notify.v1 import recipient_service_pb2 as rsvc
from interfaces.grpc.gen.notify.v1 import recipient_service_pb2_grpc as rsvc_grpc
from tests.e2e.harness import Caller, Notifyd
from tests.e2e.helpers import error_reason, field_violations

pytestmark = pytest.mark.e2e


def _valid(**overrides: object) -> svc.SendNotificationRequest:
    fields: dict[str, object] = {
        "request_id": f"req-{uuid.uuid4()}",
        "user_id": "user-1",
        "channel": pb.CHANNEL_IN_APP,
        "category": "mention",
        "content": pb.Content(title="Hello", body="there"),
    }
    fields.update(overrides)
    return svc.SendNotificationRequest(**fields)  # type: ignore[arg-type]


def _variables(**values: object) -> Struct:
    s = Struct()
    s.update(values)
    return s


def _refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert isinstance(error, grpc.RpcError)
    return error


BAD_SENDS: list[tuple[str, dict[str, object], str]] = [
    ("missing user_id", {"user_id": ""}, "user_id"),
    ("unspecified channel", {"channel": pb.CHANNEL_UNSPECIFIED}, "channel"),
    ("unknown channel", {"channel": 99}, "channel"),
    ("unknown priority", {"priority": 42}, "priority"),
    ("missing request_id", {"request_id": ""}, "request_id"),
    ("missing category", {"category": ""}, "category"),
    (
        "both content and template",
        {"template": pb.TemplateReference(name="order_shipped")},
        "content",
    ),
    ("neither content nor template", {"content": None}, "content"),
    (
        "unknown template",
        {"content": None, "template": pb.TemplateReference(name="no_such_template")},
        "template.name",
    ),
    (
        "missing variable",
        {
            "content": None,
            "template": pb.TemplateReference(
                name="order_shipped", variables=_variables(name="Ada")
            ),
        },
        "template.variables.order_id",
    ),
    (
        "non-http webhook url",
        {"channel": pb.CHANNEL_WEBHOOK, "address": pb.Address(webhook_url="ftp://x.example/")},
        "address.webhook_url",
    ),
    (
        "address of the wrong kind",
        {"channel": pb.CHANNEL_WEBHOOK, "address": pb.Address(email="a@example.com")},
        "address",
    ),
]


@pytest.mark.parametrize(("case", "overrides", "field"), BAD_SENDS, ids=[c[0] for c in BAD_SENDS])
def test_bad_send_is_invalid_argument_naming_the_field_and_writes_nothing(
    stub: svc_grpc.NotificationServiceStub,
    acme: Caller,
    notifyd: Notifyd,
    case: str,
    overrides: dict[str, object],
    field: str,
) -> None:
    request = _valid(**{k: v for k, v in overrides.items() if v is not None})
    if overrides.get("content", "keep") is None:
        request.ClearField("content")
    before = notifyd.count_rows("acme")
    error = _refused(lambda: stub.SendNotification(request, metadata=acme.metadata))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert field in field_violations(error), field_violations(error)
    assert field in (error.details() or "")
    assert notifyd.count_rows("acme") == before


def test_a_refused_request_does_not_use_up_its_request_id(
    stub: svc_grpc.NotificationServiceStub, acme: Caller
) -> None:
    request_id = f"req-{uuid.uuid4()}"
    _refused(
        lambda: stub.SendNotification(
            _valid(request_id=request_id, user_id=""), metadata=acme.metadata
        )
    )
    accepted = stub.SendNotification(_valid(request_id=request_id), metadata=acme.metadata)
    assert accepted.notification.request_id == request_id
    assert not accepted.replayed


def test_reusing_a_request_id_for_another_request_is_already_exists(
    stub: svc_grpc.NotificationServiceStub, acme: Caller, notifyd: Notifyd
) -> None:
    request_id = f"req-{uuid.uuid4()}"
    stub.SendNotification(_valid(request_id=request_id), metadata=acme.metadata)
    before = notifyd.count_rows("acme")
    error = _refused(
        lambda: stub.SendNotification(
            _valid(request_id=request_id, user_id="someone-else"), metadata=acme.metadata
        )
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(error) == "REQUEST_ID_REUSED"
    assert notifyd.count_rows("acme") == before


def test_a_channel_without_provider_is_failed_precondition(strict_notifyd: Notifyd) -> None:
    caller = strict_notifyd.callers["acme"]
    before = strict_notifyd.count_rows("acme")
    with grpc.insecure_channel(strict_notifyd.address) as ch:
        stub = svc_grpc.NotificationServiceStub(ch)
        error = _refused(
            lambda: stub.SendNotification(
                _valid(channel=pb.CHANNEL_EMAIL, address=pb.Address(email="ada@example.com")),
                metadata=caller.metadata,
            )
        )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "CHANNEL_NOT_CONFIGURED"
    assert strict_notifyd.count_rows("acme") == before


def test_bulk_send_over_1000_recipients_is_invalid_and_writes_nothing(
    stub: svc_grpc.NotificationServiceStub, acme: Caller, notifyd: Notifyd
) -> None:
    request = svc.BulkSendRequest(
        request_id=f"req-{uuid.uuid4()}",
        channel=pb.CHANNEL_IN_APP,
        category="digest",
        content=pb.Content(title="Weekly digest"),
        recipients=[svc.BulkRecipient(user_id=f"u{i}") for i in range(1001)],
    )
    before = notifyd.count_rows("acme")
    error = _refused(lambda: stub.BulkSend(request, metadata=acme.metadata))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "recipients" in field_violations(error)
    assert "1001" in field_violations(error)["recipients"]
    assert notifyd.count_rows("acme") == before


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer nfy_not_a_real_key_at_all"),),
        (("authorization", "Basic dXNlcjpwYXNz"),),
    ],
    ids=["no key", "wrong key", "wrong scheme"],
)
def test_calls_without_a_valid_key_are_unauthenticated(
    stub: svc_grpc.NotificationServiceStub,
    notifyd: Notifyd,
    metadata: tuple[tuple[str, str], ...],
) -> None:
    before = notifyd.count_rows("acme")
    error = _refused(lambda: stub.SendNotification(_valid(), metadata=metadata))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    error = _refused(
        lambda: stub.GetUnreadCount(svc.GetUnreadCountRequest(user_id="u"), metadata=metadata)
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert notifyd.count_rows("acme") == before


def test_another_tenants_notification_is_not_found(
    stub: svc_grpc.NotificationServiceStub, acme: Caller, globex: Caller
) -> None:
    mine = stub.SendNotification(_valid(), metadata=acme.metadata).notification
    for call in (
        lambda: stub.GetNotification(
            svc.GetNotificationRequest(id=mine.id), metadata=globex.metadata
        ),
        lambda: stub.MarkAsRead(svc.MarkAsReadRequest(ids=[mine.id]), metadata=globex.metadata),
        lambda: stub.CancelNotification(
            svc.CancelNotificationRequest(id=mine.id), metadata=globex.metadata
        ),
    ):
        error = _refused(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND
    # The owner still sees it, untouched by the other tenant's attempts.
    own = stub.GetNotification(svc.GetNotificationRequest(id=mine.id), metadata=acme.metadata)
    assert own.notification.id == mine.id
    assert own.notification.status != pb.NOTIFICATION_STATUS_CANCELLED


def test_the_tenant_comes_from_the_key_not_the_request(
    stub: svc_grpc.NotificationServiceStub, globex: Caller
) -> None:
    sent = stub.SendNotification(_valid(), metadata=globex.metadata).notification
    assert sent.tenant_id == "globex"
    assert sent.caller_service == "billing"


def test_mark_as_read_of_a_non_in_app_notification_is_failed_precondition(
    stub: svc_grpc.NotificationServiceStub, acme: Caller
) -> None:
    hook = stub.SendNotification(
        _valid(
            channel=pb.CHANNEL_WEBHOOK,
            address=pb.Address(webhook_url="http://127.0.0.1:9/unused"),
        ),
        metadata=acme.metadata,
    ).notification
    error = _refused(
        lambda: stub.MarkAsRead(svc.MarkAsReadRequest(ids=[hook.id]), metadata=acme.metadata)
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_empty_ids_and_user_ids_are_invalid(
    stub: svc_grpc.NotificationServiceStub, acme: Caller
) -> None:
    error = _refused(lambda: stub.MarkAsRead(svc.MarkAsReadRequest(ids=[]), metadata=acme.metadata))
    assert "ids" in field_violations(error)
    error = _refused(
        lambda: stub.GetUnreadCount(svc.GetUnreadCountRequest(user_id=""), metadata=acme.metadata)
    )
    assert "user_id" in field_violations(error)
    error = _refused(
        lambda: stub.GetNotification(svc.GetNotificationRequest(id=""), metadata=acme.metadata)
    )
    assert "id" in field_violations(error)


def test_odd_values_are_invalid_argument_not_internal(
    channel: grpc.Channel, stub: svc_grpc.NotificationServiceStub, acme: Caller
) -> None:
    recipients = rsvc_grpc.RecipientServiceStub(channel)
    nan = Struct()
    nan.update({"order_id": float("nan")})
    calls: list[tuple[Callable[[], object], str]] = [
        (
            lambda: recipients.GetRecipient(
                rsvc.GetRecipientRequest(user_id="a\x00b"), metadata=acme.metadata
            ),
            "request",
        ),
        (
            lambda: recipients.UpdatePreferences(
                rsvc.UpdatePreferencesRequest(user_id="u-1"), metadata=acme.metadata
            ),
            "preferences",
        ),
        (
            lambda: stub.SendNotification(
                svc.SendNotificationRequest(
                    request_id="nan-1",
                    user_id="u-1",
                    channel=pb.CHANNEL_IN_APP,
                    category="order_shipped",
                    template=pb.TemplateReference(name="order_shipped", variables=nan),
                ),
                metadata=acme.metadata,
            ),
            "template.variables",
        ),
    ]
    for call, field in calls:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        assert field in field_violations(caught.value)
