"""The rules a template version must meet before it is stored, reported all at once, each
naming its field by the request's path (``contents[1].locale``, ``variables[2].name``)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

from domain.errors import ValidationFailed, Violations
from domain.locale import normalize_locale
from domain.names import NAME_RULE, is_valid_name
from domain.template.content import (
    EmailContent,
    InAppContent,
    LocalizedContent,
    PushContent,
    SmsContent,
    TemplateVersionContent,
    WebhookContent,
)

MAX_SOURCE_BYTES = 64 * 1024
MAX_VERSION_BYTES = 256 * 1024
MAX_DESCRIPTION_CHARS = 1024
MAX_VARIABLES = 128
MAX_LOCALES = 64
MAX_PUSH_DATA_ENTRIES = 64
MAX_PAYLOAD_DEPTH = 16

_VARIABLE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
# Names the template language gives a meaning of its own; a variable by that name would
# shadow it or never be seen.
_RESERVED = frozenset(
    {"loop", "self", "caller", "varargs", "kwargs", "super", "range", "dict", "namespace"}
    | {"true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is"}
)


def check_template_name(v: Violations, name: str) -> None:
    if not is_valid_name(name):
        v.add("name", NAME_RULE)


def check_description(v: Violations, description: str) -> None:
    if len(description) > MAX_DESCRIPTION_CHARS:
        v.add("description", f"longer than {MAX_DESCRIPTION_CHARS} characters")


def check_default_locale(v: Violations, default_locale: str) -> str:
    if not default_locale:
        v.add("default_locale", "required: the locale used when no other locale has content")
        return ""
    try:
        return normalize_locale(default_locale, "default_locale")
    except ValidationFailed as error:
        v.extend(error)
        return ""


def validated_content(
    v: Violations, content: TemplateVersionContent, default_locale: str
) -> TemplateVersionContent:
    """The content with canonical locale tags; violations are added to ``v``."""
    _check_variables(v, content)
    contents = _checked_contents(v, content.contents)
    if default_locale and not any(c.locale == default_locale for c in contents):
        v.add("default_locale", f"contents has no entry for the default locale {default_locale!r}")
    checked = TemplateVersionContent(content.variables, tuple(contents))
    _check_sizes(v, checked)
    return checked


def _check_variables(v: Violations, content: TemplateVersionContent) -> None:
    if len(content.variables) > MAX_VARIABLES:
        v.add("variables", f"more than {MAX_VARIABLES} variables")
    seen: set[str] = set()
    for i, var in enumerate(content.variables):
        if not _VARIABLE.match(var.name):
            v.add(
                f"variables[{i}].name",
                "1-64 characters: letters, digits and '_', starting with a letter",
            )
        elif var.name in _RESERVED:
            v.add(f"variables[{i}].name", f"{var.name!r} is reserved by the template language")
        elif var.name in seen:
            v.add(f"variables[{i}].name", f"{var.name!r} is declared twice")
        seen.add(var.name)


def _checked_contents(
    v: Violations, contents: tuple[LocalizedContent, ...]
) -> list[LocalizedContent]:
    if not contents:
        v.add("contents", "required: content for the default locale at least")
    if len(contents) > MAX_LOCALES:
        v.add("contents", f"more than {MAX_LOCALES} locales")
    seen: set[str] = set()
    checked: list[LocalizedContent] = []
    for i, localized in enumerate(contents):
        p = f"contents[{i}]"
        locale = ""
        if not localized.locale:
            v.add(f"{p}.locale", "required (a BCP 47 tag, e.g. en, de-CH)")
        else:
            try:
                locale = normalize_locale(localized.locale, f"{p}.locale")
            except ValidationFailed as error:
                v.extend(error)
        if locale and locale in seen:
            v.add(f"{p}.locale", f"{locale!r} appears twice")
        seen.add(locale)
        if not localized.channels():
            v.add(p, "has no content for any channel (set email, sms, push, in_app or webhook)")
        _check_channels(v, p, localized)
        checked.append(dataclasses.replace(localized, locale=locale))
    return checked


def _check_channels(v: Violations, p: str, c: LocalizedContent) -> None:
    if c.email is not None:
        _check_email(v, f"{p}.email", c.email)
    if c.sms is not None:
        _check_sms(v, f"{p}.sms", c.sms)
    if c.push is not None:
        _check_push(v, f"{p}.push", c.push)
    if c.in_app is not None:
        _check_in_app(v, f"{p}.in_app", c.in_app)
    if c.webhook is not None:
        _check_webhook(v, f"{p}.webhook", c.webhook)


def _check_email(v: Violations, p: str, email: EmailContent) -> None:
    if not email.subject.strip():
        v.add(f"{p}.subject", "required")
    if not email.text.strip() and not email.html.strip():
        v.add(f"{p}.text", "give text or html (or both)")


def _check_sms(v: Violations, p: str, sms: SmsContent) -> None:
    if not sms.text.strip():
        v.add(f"{p}.text", "required")


def _check_push(v: Violations, p: str, push: PushContent) -> None:
    if not push.title.strip() and not push.body.strip():
        v.add(f"{p}.body", "give a title or a body (or both)")
    if len(push.data) > MAX_PUSH_DATA_ENTRIES:
        v.add(f"{p}.data", f"more than {MAX_PUSH_DATA_ENTRIES} entries")
    for key in push.data:
        if not key.strip():
            v.add(f"{p}.data", "keys must not be blank")


def _check_in_app(v: Violations, p: str, in_app: InAppContent) -> None:
    if not in_app.title.strip() and not in_app.body.strip():
        v.add(f"{p}.body", "give a title or a body (or both)")


def _check_webhook(v: Violations, p: str, webhook: WebhookContent) -> None:
    if not webhook.payload:
        v.add(f"{p}.payload", "required: a JSON object")
    elif _depth(webhook.payload) > MAX_PAYLOAD_DEPTH:
        v.add(f"{p}.payload", f"nested deeper than {MAX_PAYLOAD_DEPTH} levels")


def _depth(value: Any) -> int:
    if isinstance(value, Mapping):
        return 1 + max((_depth(x) for x in value.values()), default=0)
    if isinstance(value, list | tuple):
        return 1 + max((_depth(x) for x in value), default=0)
    return 0


def _check_sizes(v: Violations, content: TemplateVersionContent) -> None:
    total = 0
    for source in content.sources():
        size = len(source.text.encode())
        total += size
        if size > MAX_SOURCE_BYTES:
            v.add(source.path, f"longer than {MAX_SOURCE_BYTES // 1024} KiB")
    # Keys, webhook non-string values and variables count too: the stored version is bounded.
    if total <= MAX_VERSION_BYTES:
        total = len(json.dumps(_plain(content), default=str).encode())
    if total > MAX_VERSION_BYTES:
        v.add("contents", f"the version is larger than {MAX_VERSION_BYTES // 1024} KiB")


def _plain(content: TemplateVersionContent) -> Any:
    return [
        [dataclasses.asdict(x) for x in content.variables],
        [dataclasses.asdict(x) for x in content.contents],
    ]


def check_content(content: TemplateVersionContent) -> None:
    """The rules that do not depend on the template it will belong to (sizes, locales,
    variables): worth knowing before anything is compiled or locked."""
    v = Violations()
    validated_content(v, content, "")
    v.raise_if_any()
