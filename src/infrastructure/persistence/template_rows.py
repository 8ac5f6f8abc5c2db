"""Translation between templates and their rows. The JSON shape is the one migration 0003
writes: variables [{"name","type","required"}], contents {locale: {CHANNEL: {field: source}}}."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain.notification import Channel
from domain.template import (
    ChannelContent,
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
    VersionState,
    WebhookContent,
)


def template_from_row(row: Mapping[Any, Any]) -> Template:
    return Template(
        tenant_id=row["tenant_id"],
        name=row["name"],
        description=row["description"],
        default_locale=row["default_locale"],
        active_version=row["active_version"],
        latest_version=row["latest_version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        row_version=row["row_version"],
    )


def template_to_row(t: Template) -> dict[str, Any]:
    return {
        "tenant_id": t.tenant_id,
        "name": t.name,
        "description": t.description,
        "default_locale": t.default_locale,
        "active_version": t.active_version,
        "latest_version": t.latest_version,
        "created_at": t.created_at,
        "updated_at": t.updated_at,
    }


def version_from_row(row: Mapping[Any, Any]) -> TemplateVersion:
    return TemplateVersion(
        name=row["name"],
        version=row["version"],
        state=VersionState(row["state"]),
        content=content_from_json(row["variables"], row["contents"]),
        created_at=row["created_at"],
        created_by=row["created_by"],
    )


def version_to_row(tenant_id: str, v: TemplateVersion) -> dict[str, Any]:
    variables, contents = content_to_json(v.content)
    return {
        "tenant_id": tenant_id,
        "name": v.name,
        "version": v.version,
        "state": v.state.value,
        "variables": variables,
        "contents": contents,
        "created_at": v.created_at,
        "created_by": v.created_by,
    }


def content_to_json(
    content: TemplateVersionContent,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    variables = [
        {"name": v.name, "type": v.type.value, "required": v.required} for v in content.variables
    ]
    contents = {
        c.locale: {
            channel.value: _channel_to_json(found)
            for channel in c.channels()
            if (found := c.for_channel(channel)) is not None
        }
        for c in content.contents
    }
    return variables, contents


def _channel_to_json(content: ChannelContent) -> dict[str, Any]:
    match content:
        case EmailContent():
            return {"subject": content.subject, "html": content.html, "text": content.text}
        case SmsContent():
            return {"text": content.text}
        case PushContent():
            return {"title": content.title, "body": content.body, "data": dict(content.data)}
        case InAppContent():
            return {"title": content.title, "body": content.body}
        case WebhookContent():
            return {"payload": content.payload}
    raise AssertionError(f"unknown channel content {content!r}")


def content_from_json(
    variables: list[Mapping[str, Any]], contents: Mapping[str, Mapping[str, Any]]
) -> TemplateVersionContent:
    return TemplateVersionContent(
        variables=tuple(
            VariableDeclaration(v["name"], VariableType(v["type"]), bool(v["required"]))
            for v in variables
        ),
        # JSONB keeps no key order: locales come back sorted, the same on every read.
        contents=tuple(_localized(loc, channels) for loc, channels in sorted(contents.items())),
    )


def _localized(locale: str, channels: Mapping[str, Mapping[str, Any]]) -> LocalizedContent:
    def get(channel: Channel) -> Mapping[str, Any] | None:
        return channels.get(channel.value)

    email, sms, push, in_app, webhook = (
        get(c) for c in (Channel.EMAIL, Channel.SMS, Channel.PUSH, Channel.IN_APP, Channel.WEBHOOK)
    )
    return LocalizedContent(
        locale=locale,
        email=EmailContent(email["subject"], email.get("html", ""), email.get("text", ""))
        if email is not None
        else None,
        sms=SmsContent(sms["text"]) if sms is not None else None,
        push=PushContent(push["title"], push["body"], dict(push.get("data", {})))
        if push is not None
        else None,
        in_app=InAppContent(in_app["title"], in_app["body"]) if in_app is not None else None,
        webhook=WebhookContent(webhook["payload"]) if webhook is not None else None,
    )
