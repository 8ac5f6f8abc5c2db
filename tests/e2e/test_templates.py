"""TemplateService on the real `notifyd run` process: create, preview, activate, send; and
bad templates refused as INVALID_ARGUMENT naming the field, with nothing stored."""

from __future__ import annotations

import json
import uuid
from typing import Any

import grpc
import pytest

from interfaces.grpc.gen.notify.v1 import notification_pb2 as pb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as svc_grpc
from interfaces.grpc.gen.notify.v1 import template_service_pb2 as tpb
from interfaces.grpc.gen.notify.v1 import template_service_pb2_grpc as tpb_grpc
from tests.e2e.harness import Caller, Notifyd
from tests.e2e.helpers import error_reason, eventually, field_violations
from tests.e2e.test_grpcurl import grpcurl

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def templates(channel: grpc.Channel) -> tpb_grpc.TemplateServiceStub:
    return tpb_grpc.TemplateServiceStub(channel)


def _name() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def _request(template_name: str, **overrides: Any) -> tpb.CreateTemplateRequest:
    request = tpb.CreateTemplateRequest(
        name=template_name,
        description="e2e",
        default_locale="en",
        variables=[
            tpb.TemplateVariable(name="name", type=tpb.VARIABLE_TYPE_STRING, required=True),
            tpb.TemplateVariable(name="count", type=tpb.VARIABLE_TYPE_INTEGER, required=False),
        ],
        contents=[
            tpb.LocalizedTemplateContent(
                locale="en",
                in_app=tpb.InAppTemplate(title="Hello {{ name }}", body="en"),
                email=tpb.EmailTemplate(subject="Hi", html="<p>{{ name }}</p>", text="t"),
            ),
            tpb.LocalizedTemplateContent(
                locale="de", in_app=tpb.InAppTemplate(title="Hallo {{ name }}", body="de")
            ),
        ],
    )
    for key, value in overrides.items():
        field = getattr(request, key)
        if isinstance(value, list):
            del field[:]
            field.extend(value)
        else:
            setattr(request, key, value)
    return request


def test_create_preview_activate_send_and_the_notification_records_the_version(
    templates: tpb_grpc.TemplateServiceStub, stub: svc_grpc.NotificationServiceStub, acme: Caller
) -> None:
    name = _name()
    created = templates.CreateTemplate(_request(name), metadata=acme.metadata)
    assert created.template.latest_version == 1
    assert created.template.active_version == 0
    assert created.version.state == tpb.TEMPLATE_VERSION_STATE_DRAFT
    assert created.version.created_by == "orders"

    preview = templates.RenderTemplate(
        tpb.RenderTemplateRequest(
            name=name, version=1, channel=pb.CHANNEL_EMAIL, locale="de-AT", variables=_vars()
        ),
        metadata=acme.metadata,
    )
    # German has no email content: it falls back to the default, and HTML is escaped.
    assert (preview.version, preview.locale) == (1, "en")
    assert preview.content.html == "<p>&lt;Ada&gt;</p>"
    assert len(preview.content_hash) == 64

    send = svc.SendNotificationRequest(
        request_id=f"tpl-{uuid.uuid4()}",
        user_id="tpl-user",
        channel=pb.CHANNEL_IN_APP,
        category="welcome",
        template=pb.TemplateReference(name=name, locale="de-CH", variables=_vars()),
    )
    with pytest.raises(grpc.RpcError) as inactive:
        stub.SendNotification(send, metadata=acme.metadata)
    assert inactive.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(inactive.value) == "TEMPLATE_INACTIVE"

    activated = templates.ActivateTemplateVersion(
        tpb.ActivateTemplateVersionRequest(name=name, version=1), metadata=acme.metadata
    )
    assert activated.template.active_version == 1
    sent = stub.SendNotification(send, metadata=acme.metadata).notification
    got = stub.GetNotification(
        svc.GetNotificationRequest(id=sent.id), metadata=acme.metadata
    ).notification
    assert (got.template_name, got.template_version, got.locale) == (name, 1, "de")
    assert got.content.title == "Hallo <Ada>"
    assert len(got.content_hash) == 64

    updated = templates.UpdateTemplate(
        tpb.UpdateTemplateRequest(
            name=name,
            variables=[tpb.TemplateVariable(name="name", type=tpb.VARIABLE_TYPE_STRING)],
            contents=[
                tpb.LocalizedTemplateContent(
                    locale="en", in_app=tpb.InAppTemplate(title="v2 {{ name }}", body="b")
                )
            ],
        ),
        metadata=acme.metadata,
    )
    assert updated.version.version == 2
    assert updated.template.description == "e2e"
    v1 = templates.GetTemplate(tpb.GetTemplateRequest(name=name, version=1), metadata=acme.metadata)
    assert v1.version.state == tpb.TEMPLATE_VERSION_STATE_ACTIVE
    assert [c.locale for c in v1.version.contents] == ["de", "en"]

    templates.DeactivateTemplate(tpb.DeactivateTemplateRequest(name=name), metadata=acme.metadata)

    def attempt() -> grpc.StatusCode:
        try:
            stub.SendNotification(
                svc.SendNotificationRequest(
                    request_id=f"tpl-{uuid.uuid4()}",
                    user_id="tpl-user",
                    channel=pb.CHANNEL_IN_APP,
                    category="welcome",
                    template=pb.TemplateReference(name=name, variables=_vars()),
                ),
                metadata=acme.metadata,
            )
        except grpc.RpcError as error:
            return error.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    # The API caches an active version for a few seconds; after that sends are refused.
    refused = eventually(attempt, lambda code: code != grpc.StatusCode.OK, timeout=10)
    assert refused == grpc.StatusCode.FAILED_PRECONDITION


def _vars(**values: Any) -> Any:
    from google.protobuf.struct_pb2 import Struct

    struct = Struct()
    struct.update(values or {"name": "<Ada>"})
    return struct


def _oversized() -> list[tpb.LocalizedTemplateContent]:
    return [tpb.LocalizedTemplateContent(locale="en", sms=tpb.SmsTemplate(text="x" * 70_000))]


def _sms(text: str) -> list[tpb.LocalizedTemplateContent]:
    return [tpb.LocalizedTemplateContent(locale="en", sms=tpb.SmsTemplate(text=text))]


@pytest.mark.parametrize(
    ("case", "overrides", "field"),
    [
        ("invalid default locale", {"default_locale": "english please"}, "default_locale"),
        (
            "invalid content locale",
            {
                "contents": [
                    tpb.LocalizedTemplateContent(locale="en", sms=tpb.SmsTemplate(text="x")),
                    tpb.LocalizedTemplateContent(locale="e_n_!", sms=tpb.SmsTemplate(text="x")),
                ]
            },
            "contents[1].locale",
        ),
        ("undeclared variable", {"contents": _sms("Hi {{ nmae }}")}, "contents[0].sms.text"),
        ("oversized template", {"contents": _oversized()}, "contents[0].sms.text"),
        (
            "sandbox escape",
            {"contents": _sms("{{ ''.__class__.__mro__[1].__subclasses__() }}")},
            "contents[0].sms.text",
        ),
        ("syntax error", {"contents": _sms("{% if name %}never closed")}, "contents[0].sms.text"),
        (
            "untyped variable",
            {"variables": [tpb.TemplateVariable(name="name")]},
            "variables[0].type",
        ),
        ("bad name", {"name": "no spaces allowed"}, "name"),
    ],
)
def test_bad_templates_are_invalid_argument_naming_the_field_and_nothing_is_stored(
    templates: tpb_grpc.TemplateServiceStub,
    acme: Caller,
    case: str,
    overrides: dict[str, Any],
    field: str,
) -> None:
    name = _name()
    with pytest.raises(grpc.RpcError) as info:
        templates.CreateTemplate(_request(name, **overrides), metadata=acme.metadata)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
    assert field in field_violations(info.value), (case, field_violations(info.value))
    with pytest.raises(grpc.RpcError) as missing:
        templates.GetTemplate(tpb.GetTemplateRequest(name=name), metadata=acme.metadata)
    assert missing.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)


def test_send_time_variable_errors_name_the_variable_and_queue_nothing(
    templates: tpb_grpc.TemplateServiceStub,
    stub: svc_grpc.NotificationServiceStub,
    acme: Caller,
    notifyd: Notifyd,
) -> None:
    name = _name()
    templates.CreateTemplate(_request(name, activate=True), metadata=acme.metadata)
    before = notifyd.count_rows("acme")
    for variables, field in (
        (_vars(name="x", extra=1), "template.variables.extra"),
        (_vars(name="x", count=1.5), "template.variables.count"),
        (_vars(count=2), "template.variables.name"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            stub.SendNotification(
                svc.SendNotificationRequest(
                    request_id=f"tpl-{uuid.uuid4()}",
                    user_id="u",
                    channel=pb.CHANNEL_IN_APP,
                    category="welcome",
                    template=pb.TemplateReference(name=name, variables=variables),
                ),
                metadata=acme.metadata,
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in field_violations(info.value)
    assert notifyd.count_rows("acme") == before


def test_another_tenant_cannot_see_the_template(
    templates: tpb_grpc.TemplateServiceStub, acme: Caller, globex: Caller
) -> None:
    name = _name()
    templates.CreateTemplate(_request(name), metadata=acme.metadata)
    with pytest.raises(grpc.RpcError) as info:
        templates.GetTemplate(tpb.GetTemplateRequest(name=name), metadata=globex.metadata)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as taken:
        templates.CreateTemplate(_request(name), metadata=acme.metadata)
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_list_pages_through_the_templates(
    templates: tpb_grpc.TemplateServiceStub, globex: Caller
) -> None:
    prefix = f"list-{uuid.uuid4().hex[:6]}"
    for i in range(3):
        templates.CreateTemplate(_request(f"{prefix}-{i}"), metadata=globex.metadata)
    seen: list[str] = []
    token = ""
    while True:
        page = templates.ListTemplates(
            tpb.ListTemplatesRequest(page_size=2, page_token=token), metadata=globex.metadata
        )
        seen.extend(t.name for t in page.templates)
        token = page.next_page_token
        if not token:
            break
    assert [n for n in seen if n.startswith(prefix)] == [f"{prefix}-{i}" for i in range(3)]


def test_grpcurl_creates_and_previews_a_template(notifyd: Notifyd, acme: Caller) -> None:
    listed = grpcurl(notifyd, "list")
    assert "notify.v1.TemplateService" in listed.stdout.split()
    auth = f"authorization: Bearer {acme.key}"
    name = _name()
    body = {
        "name": name,
        "default_locale": "en",
        "variables": [{"name": "who", "type": "VARIABLE_TYPE_STRING", "required": True}],
        "contents": [
            {"locale": "en", "webhook": {"payload": {"greeting": "Hi {{ who }}", "n": 1}}}
        ],
    }
    done = grpcurl(
        notifyd,
        "notify.v1.TemplateService/CreateTemplate",
        flags=("-H", auth, "-d", json.dumps(body)),
    )
    assert done.returncode == 0, done.stderr
    preview_body = {
        "name": name,
        "version": 1,
        "channel": "CHANNEL_WEBHOOK",
        "variables": {"who": "grpcurl"},
    }
    done = grpcurl(
        notifyd,
        "notify.v1.TemplateService/RenderTemplate",
        flags=("-H", auth, "-d", json.dumps(preview_body)),
    )
    assert done.returncode == 0, done.stderr
    preview = json.loads(done.stdout)
    assert preview["content"]["data"] == {"greeting": "Hi grpcurl", "n": 1}
    assert preview["locale"] == "en"
    assert (
        len(preview["contentHash"] if "contentHash" in preview else preview["content_hash"]) == 64
    )
    bad = grpcurl(
        notifyd,
        "notify.v1.TemplateService/RenderTemplate",
        flags=("-H", auth, "-d", json.dumps({**preview_body, "locale": "not a tag"})),
    )
    assert bad.returncode != 0
    assert "InvalidArgument" in bad.stderr
