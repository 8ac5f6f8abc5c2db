"""The Template aggregate: versions, activation, and the field paths of its validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import NotFound, PreconditionFailed, ValidationFailed
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
    VersionState,
    WebhookContent,
    checked_values,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
NAME = VariableDeclaration("name", VariableType.STRING)
IN_APP_EN = LocalizedContent("en", in_app=InAppContent("Hi {{ name }}", "Body"))
CONTENT = TemplateVersionContent((NAME,), (IN_APP_EN,))


def create(
    content: TemplateVersionContent = CONTENT, name: str = "welcome", default_locale: str = "en"
) -> tuple[Template, TemplateVersion]:
    return Template.create(
        tenant_id="t",
        name=name,
        description="",
        default_locale=default_locale,
        content=content,
        now=T0,
        created_by="svc",
    )


def fields(error: pytest.ExceptionInfo[ValidationFailed]) -> list[str]:
    return [v.field for v in error.value.violations]


def test_create_stores_version_1_as_a_draft() -> None:
    template, _ = Template.create(
        tenant_id="t",
        name="welcome",
        description="d",
        default_locale="EN",
        content=CONTENT,
        now=T0,
        created_by="svc",
    )
    assert (template.latest_version, template.active_version) == (1, None)
    assert template.default_locale == "en"
    assert [v.version for v in template.pending_versions()] == [1]
    assert template.pending_versions()[0].state is VersionState.DRAFT
    assert template.pending_versions()[0].created_by == "svc"


def test_every_update_is_a_new_version_and_old_ones_stay() -> None:
    template, _ = create()
    template.mark_saved()
    later = T0 + timedelta(minutes=1)
    v2 = template.add_version(CONTENT, later, "svc")
    v3 = template.add_version(CONTENT, later, "svc", description="new")
    assert (v2.version, v3.version, template.latest_version) == (2, 3, 3)
    assert [v.version for v in template.pending_versions()] == [2, 3]
    assert template.description == "new"
    assert template.updated_at == later


def test_only_one_version_is_active_and_the_previous_becomes_inactive() -> None:
    template, _ = create()
    template.activate(1, T0)
    template.mark_saved()
    template.add_version(CONTENT, T0, "svc")
    template.activate(2, T0)
    assert template.active_version == 2
    assert template.pending_state_changes() == {1: VersionState.INACTIVE}
    assert template.new_version(2).state is VersionState.ACTIVE


def test_activating_the_active_version_again_changes_nothing() -> None:
    template, _ = create()
    template.activate(1, T0)
    template.mark_saved()
    template.activate(1, T0 + timedelta(hours=1))
    assert template.pending_state_changes() == {}
    assert template.updated_at == T0


def test_activating_an_unknown_version_is_not_found() -> None:
    template, _ = create()
    with pytest.raises(NotFound):
        template.activate(2, T0)
    with pytest.raises(ValidationFailed) as info:
        template.activate(0, T0)
    assert fields(info) == ["version"]


def test_deactivate_makes_the_active_version_inactive_and_refuses_a_second_time() -> None:
    template, _ = create()
    template.activate(1, T0)
    template.mark_saved()
    template.deactivate(T0)
    assert template.active_version is None
    assert template.pending_state_changes() == {1: VersionState.INACTIVE}
    with pytest.raises(PreconditionFailed) as info:
        template.deactivate(T0)
    assert info.value.reason == "TEMPLATE_INACTIVE"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "bad name"}, "name"),
        ({"name": ""}, "name"),
        ({"default_locale": ""}, "default_locale"),
        ({"default_locale": "english!"}, "default_locale"),
        ({"default_locale": "fr"}, "default_locale"),  # no content for it
    ],
)
def test_create_names_the_bad_field(kwargs: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        create(**kwargs)  # type: ignore[arg-type]
    assert field in fields(info)


def content(
    *localized: LocalizedContent, variables: tuple[VariableDeclaration, ...] = (NAME,)
) -> TemplateVersionContent:
    return TemplateVersionContent(variables, localized)


@pytest.mark.parametrize(
    ("version", "field"),
    [
        (content(IN_APP_EN, LocalizedContent("x-y-z!", sms=SmsContent("t"))), "contents[1].locale"),
        (content(IN_APP_EN, LocalizedContent("EN", sms=SmsContent("t"))), "contents[1].locale"),
        (content(LocalizedContent("en")), "contents[0]"),
        (content(LocalizedContent("en", email=EmailContent(""))), "contents[0].email.subject"),
        (content(LocalizedContent("en", email=EmailContent("s"))), "contents[0].email.text"),
        (content(LocalizedContent("en", sms=SmsContent(" "))), "contents[0].sms.text"),
        (content(LocalizedContent("en", push=PushContent("", ""))), "contents[0].push.body"),
        (
            content(LocalizedContent("en", webhook=WebhookContent({}))),
            "contents[0].webhook.payload",
        ),
        (
            content(IN_APP_EN, variables=(NAME, NAME)),
            "variables[1].name",
        ),
        (
            content(IN_APP_EN, variables=(NAME, VariableDeclaration("1x", VariableType.ANY))),
            "variables[1].name",
        ),
        (
            content(IN_APP_EN, variables=(NAME, VariableDeclaration("loop", VariableType.ANY))),
            "variables[1].name",
        ),
        (
            content(LocalizedContent("en", sms=SmsContent("x" * (64 * 1024 + 1)))),
            "contents[0].sms.text",
        ),
        (TemplateVersionContent((NAME,), ()), "contents"),
    ],
)
def test_version_content_names_the_bad_field(version: TemplateVersionContent, field: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        create(version)
    assert field in fields(info)


def test_an_oversized_version_is_refused_as_a_whole() -> None:
    big = "x" * (60 * 1024)
    locales = [LocalizedContent(tag, sms=SmsContent(big)) for tag in ("en", "de", "fr", "it", "es")]
    with pytest.raises(ValidationFailed) as info:
        create(content(*locales))
    assert fields(info) == ["contents"]


def test_locales_are_stored_in_canonical_case() -> None:
    template, _ = create(content(IN_APP_EN, LocalizedContent("ZH-hant-tw", sms=SmsContent("t"))))
    [version] = template.pending_versions()
    assert [c.locale for c in version.content.contents] == ["en", "zh-Hant-TW"]


def test_update_can_change_the_default_locale_only_to_one_with_content() -> None:
    template, _ = create()
    template.mark_saved()
    with pytest.raises(ValidationFailed) as info:
        template.add_version(CONTENT, T0, "svc", default_locale="de")
    assert fields(info) == ["default_locale"]
    assert template.latest_version == 1  # nothing changed


# -- values given at send or preview time ----------------------------------------------------

DECLS = TemplateVersionContent(
    (
        VariableDeclaration("s", VariableType.STRING),
        VariableDeclaration("i", VariableType.INTEGER),
        VariableDeclaration("n", VariableType.NUMBER, required=False),
        VariableDeclaration("b", VariableType.BOOLEAN, required=False),
        VariableDeclaration("l", VariableType.LIST, required=False),
        VariableDeclaration("o", VariableType.OBJECT, required=False),
        VariableDeclaration("a", VariableType.ANY, required=False),
    ),
    (IN_APP_EN,),
)


def test_values_of_the_declared_types_pass_and_whole_floats_become_integers() -> None:
    values = {"s": "x", "i": 3.0, "n": 1.5, "b": True, "l": [1], "o": {"k": 1}, "a": None}
    checked = checked_values(DECLS, values, "w", 2)
    assert checked["i"] == 3
    assert isinstance(checked["i"], int)
    assert checked["n"] == 1.5


def test_missing_mistyped_and_undeclared_values_are_each_named() -> None:
    with pytest.raises(ValidationFailed) as info:
        checked_values(DECLS, {"i": 1.5, "b": "yes", "extra": 1}, "w", 2)
    by_field = {v.field: v.description for v in info.value.violations}
    assert by_field == {
        "template.variables.s": "required by template 'w' version 2",
        "template.variables.i": "must be an integer (a whole number)",
        "template.variables.b": "must be a boolean",
        "template.variables.extra": "not declared by template 'w' version 2",
    }


def test_a_boolean_is_not_a_number() -> None:
    with pytest.raises(ValidationFailed) as info:
        checked_values(DECLS, {"s": "x", "i": True}, "w", 1, field="variables")
    assert fields(info) == ["variables.i"]
