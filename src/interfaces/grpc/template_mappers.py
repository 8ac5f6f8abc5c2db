"""Translation between TemplateService messages and the template domain."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import json_format

from application.use_cases.templates import RenderRequest, TemplateDraft
from domain.errors import Violations
from domain.notification import Rendered
from domain.template import (
    EmailContent,
    InAppContent,
    LocalizedContent,
    PushContent,
    SmsContent,
    Template,
    TemplateVersion,
    TemplateVersionContent,
    VariableDeclaration,
    VariableType,
    WebhookContent,
)
from interfaces.grpc.gen.notify.v1 import template_service_pb2 as tpb
from interfaces.grpc.mappers import CHANNELS, content_to_pb, struct_to_dict, timestamp

_TYPES: dict[tpb.VariableType.ValueType, VariableType] = {
    tpb.VariableType.Value(f"VARIABLE_TYPE_{t.value}"): t for t in VariableType
}
_TYPES_TO_PB = {t: n for n, t in _TYPES.items()}


def _variables(
    messages: Iterable[tpb.TemplateVariable], v: Violations
) -> tuple[VariableDeclaration, ...]:
    declared: list[VariableDeclaration] = []
    for i, m in enumerate(messages):
        kind = _TYPES.get(m.type)
        if kind is None:
            v.add(
                f"variables[{i}].type",
                "required: one of STRING, INTEGER, NUMBER, BOOLEAN, LIST, OBJECT, ANY",
            )
            kind = VariableType.ANY
        declared.append(VariableDeclaration(m.name, kind, m.required))
    return tuple(declared)


def _localized(m: tpb.LocalizedTemplateContent) -> LocalizedContent:
    return LocalizedContent(
        locale=m.locale,
        email=EmailContent(m.email.subject, m.email.html, m.email.text)
        if m.HasField("email")
        else None,
        sms=SmsContent(m.sms.text) if m.HasField("sms") else None,
        push=PushContent(m.push.title, m.push.body, dict(m.push.data))
        if m.HasField("push")
        else None,
        in_app=InAppContent(m.in_app.title, m.in_app.body) if m.HasField("in_app") else None,
        webhook=WebhookContent(struct_to_dict(m.webhook.payload, "contents.webhook.payload"))
        if m.HasField("webhook")
        else None,
    )


def draft(request: tpb.CreateTemplateRequest | tpb.UpdateTemplateRequest) -> TemplateDraft:
    """For an update, an empty description or default locale keeps the current one."""
    v = Violations()
    content = TemplateVersionContent(
        _variables(request.variables, v), tuple(_localized(c) for c in request.contents)
    )
    v.raise_if_any()
    creating = isinstance(request, tpb.CreateTemplateRequest)
    return TemplateDraft(
        name=request.name,
        content=content,
        description=request.description if creating or request.description else None,
        default_locale=request.default_locale if creating or request.default_locale else None,
        activate=request.activate,
    )


def template_to_pb(t: Template) -> tpb.Template:
    return tpb.Template(
        name=t.name,
        description=t.description,
        default_locale=t.default_locale,
        active_version=t.active_version or 0,
        latest_version=t.latest_version,
        create_time=timestamp(t.created_at),
        update_time=timestamp(t.updated_at),
    )


def _localized_to_pb(c: LocalizedContent) -> tpb.LocalizedTemplateContent:
    m = tpb.LocalizedTemplateContent(locale=c.locale)
    if c.email is not None:
        m.email.CopyFrom(
            tpb.EmailTemplate(subject=c.email.subject, html=c.email.html, text=c.email.text)
        )
    if c.sms is not None:
        m.sms.text = c.sms.text
    if c.push is not None:
        m.push.CopyFrom(
            tpb.PushTemplate(title=c.push.title, body=c.push.body, data=dict(c.push.data))
        )
    if c.in_app is not None:
        m.in_app.CopyFrom(tpb.InAppTemplate(title=c.in_app.title, body=c.in_app.body))
    if c.webhook is not None:
        json_format.ParseDict(dict(c.webhook.payload), m.webhook.payload)
    return m


def version_to_pb(template: Template, v: TemplateVersion) -> tpb.TemplateVersion:
    return tpb.TemplateVersion(
        version=v.version,
        state=tpb.TemplateVersionState.Value(
            f"TEMPLATE_VERSION_STATE_{template.state_of(v).value}"
        ),
        variables=[
            tpb.TemplateVariable(name=x.name, type=_TYPES_TO_PB[x.type], required=x.required)
            for x in v.content.variables
        ],
        contents=[_localized_to_pb(c) for c in v.content.contents],
        create_time=timestamp(v.created_at),
        created_by=v.created_by,
    )


def render_request(request: tpb.RenderTemplateRequest) -> RenderRequest:
    return RenderRequest(
        name=request.name,
        channel=CHANNELS.get(request.channel),
        version=request.version,
        locale=request.locale,
        variables=struct_to_dict(request.variables),
    )


def render_response(rendered: Rendered) -> tpb.RenderTemplateResponse:
    return tpb.RenderTemplateResponse(
        content=content_to_pb(rendered.content),
        version=rendered.template_version,
        locale=rendered.locale,
        content_hash=rendered.content.digest(),
    )
