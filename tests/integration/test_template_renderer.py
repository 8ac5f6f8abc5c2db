"""Templates stored in the real PostgreSQL, rendered by the Jinja2 sandbox: locale fallback,
version pinning, autoescaping, variables, and templates that try to escape or exhaust it."""

from __future__ import annotations

import time
from typing import Any

import pytest

from application.principal import Principal
from application.use_cases.templates import (
    ActivateTemplateVersion,
    CreateTemplate,
    DeactivateTemplate,
    RenderRequest,
    RenderTemplate,
    TemplateDraft,
    UpdateTemplate,
)
from domain.errors import PreconditionFailed, ValidationFailed
from domain.notification import Channel, Rendered, TemplateRef
from domain.template import (
    EmailContent,
    InAppContent,
    LocalizedContent,
    PushContent,
    SmsContent,
    TemplateVersionContent,
    VariableDeclaration,
    VariableType,
    WebhookContent,
)
from infrastructure.clock import SystemClock
from infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from infrastructure.templates import JinjaTemplateEngine, JinjaTemplateRenderer
from infrastructure.templates.deadline import TimedOut, Watchdog

pytestmark = pytest.mark.integration

ALICE = Principal("tenant-a", "orders")
NAME = VariableDeclaration("name", VariableType.STRING)


@pytest.fixture(scope="module")
def jinja() -> JinjaTemplateEngine:
    return JinjaTemplateEngine()


@pytest.fixture
def renderer(uow: SqlUnitOfWorkFactory, jinja: JinjaTemplateEngine) -> JinjaTemplateRenderer:
    return JinjaTemplateRenderer(uow, jinja, cache_seconds=0)


def content(
    *localized: LocalizedContent, variables: tuple[VariableDeclaration, ...] = (NAME,)
) -> TemplateVersionContent:
    return TemplateVersionContent(variables, localized)


async def create(
    uow: SqlUnitOfWorkFactory,
    jinja: JinjaTemplateEngine,
    name: str,
    version: TemplateVersionContent,
    default_locale: str = "en",
    activate: bool = True,
) -> None:
    draft = TemplateDraft(name, version, "", default_locale, activate)
    await CreateTemplate(uow, jinja, SystemClock()).execute(ALICE, draft)


async def send(
    renderer: JinjaTemplateRenderer,
    name: str,
    variables: dict[str, Any],
    locale: str = "",
    channel: Channel = Channel.IN_APP,
) -> Rendered:
    return await renderer.render(ALICE.tenant_id, TemplateRef(name, variables, locale), channel)


async def save_error(
    uow: SqlUnitOfWorkFactory, jinja: JinjaTemplateEngine, source: str
) -> ValidationFailed | None:
    try:
        await create(uow, jinja, "evil", content(LocalizedContent("en", sms=SmsContent(source))))
    except ValidationFailed as error:
        return error
    return None


def fields(error: ValidationFailed) -> list[str]:
    return [v.field for v in error.violations]


# -- locales ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "used"),
    [
        ("zh-Hant-TW", "zh-Hant"),
        ("zh-hant-tw", "zh-Hant"),
        ("zh_Hant", "zh-Hant"),
        ("zh-Hans-CN", "zh"),
        ("zh", "zh"),
        ("fr-CA", "en"),
        ("", "en"),
    ],
)
async def test_the_locale_falls_back_from_most_specific_to_the_default(
    uow: SqlUnitOfWorkFactory,
    jinja: JinjaTemplateEngine,
    renderer: JinjaTemplateRenderer,
    requested: str,
    used: str,
) -> None:
    await create(
        uow,
        jinja,
        "greet",
        content(
            LocalizedContent("en", in_app=InAppContent("Hello {{ name }}", "en")),
            LocalizedContent("zh", in_app=InAppContent("你好 {{ name }}", "zh")),
            LocalizedContent("zh-Hant", in_app=InAppContent("妳好 {{ name }}", "zh-Hant")),
        ),
    )
    rendered = await send(renderer, "greet", {"name": "Ada"}, requested)
    assert rendered.locale == used
    assert rendered.content.body == used


async def test_the_first_locale_with_content_for_the_channel_is_used(
    uow: SqlUnitOfWorkFactory, jinja: JinjaTemplateEngine, renderer: JinjaTemplateRenderer
) -> None:
    await create(
        uow,
        jinja,
        "greet",
        content(
            LocalizedContent("en", sms=SmsContent("en sms"), in_app=InAppContent("t", "en")),
            LocalizedContent("zh", sms=SmsContent("zh sms")),
            LocalizedContent("zh-Hant-TW", in_app=InAppContent("t", "zh-Hant-TW")),
        ),
    )
    sms = await send(renderer, "greet", {"name": "x"}, "zh-Hant-TW", Channel.SMS)
    assert (sms.locale, sms.content.body) == ("zh", "zh sms")
    in_app = await send(renderer, "greet", {"name": "x"}, "zh-Hant-TW")
    assert in_app.locale == "zh-Hant-TW"
    with pytest.raises(PreconditionFailed) as info:
        await send(renderer, "greet", {"name": "x"}, "zh", Channel.PUSH)
    assert info.value.reason == "TEMPLATE_HAS_NO_CONTENT_FOR_CHANNEL"


async def test_an_invalid_locale_tag_names_template_locale(
    uow: SqlUnitOfWorkFactory, jinja: JinjaTemplateEngine, renderer: JinjaTemplateRenderer
) -> None:
    await create(uow, jinja, "greet", content(LocalizedContent("en", sms=SmsContent("x"))))
    with pytest.raises(ValidationFailed) as info:
        await send(renderer, "greet", {"name": "x"}, "not a locale!", Channel.SMS)
    assert fields(info.value) == ["template.locale"]


# -- versions ---------------------------------------------------------------------------------


def greeting(word: str) -> TemplateVersionContent:
    return content(LocalizedContent("en", in_app=InAppContent(f"{word} {{{{ name }}}}", "b")))


async def test_sends_use_the_active_version_and_a_draft_only_previews(
    uow: SqlUnitOfWorkFactory, jinja: JinjaTemplateEngine, renderer: JinjaTemplateRenderer
) -> None:
    await create(uow, jinja, "greet", greeting("Hello"))
    await UpdateTemplate(uow, jinja, SystemClock()).execute(
        ALICE, TemplateDraft("greet", greeting("Howdy"))
    )
    sent = await send(renderer, "greet", {"name": "Ada"})
    assert (sent.template_version, sent.content.title) == (1, "Hello Ada")
    preview = await RenderTemplate(uow, jinja).execute(
        ALICE, RenderRequest("greet", Channel.IN_APP, 2, "", {"name": "Ada"})
    )
    assert (preview.template_version, preview.content.title) == (2, "Howdy Ada")

    await ActivateTemplateVersion(uow, SystemClock()).execute(ALICE, "greet", 2)
    sent = await send(renderer, "greet", {"name": "Ada"})
    assert (sent.template_version, sent.content.title) == (2, "Howdy Ada")


async def test_a_deactivated_template_refuses_sends(
    uow: SqlUnitOfWorkFactory, jinja: JinjaTemplateEngine, renderer: JinjaTemplateRenderer
) -> None:
    await create(uow, jinja, "greet", greeting("Hello"))
    await DeactivateTemplate(uow, SystemClock()).execute(ALICE, "greet")
    with pytest.raises(PreconditionFailed) as info:
        await send(renderer, "greet", {"name": "Ada"})
    assert (info.value.subject, info.value.reason) == ("template", "TEMPLATE_INACTIVE")


async def test_a_draft_never_activated_refuses_sends(
    uow: SqlUnitOfWorkFactory, jinja: JinjaTemplateEngine, renderer: JinjaTemplateRenderer
) -> None:
    await create(uow, jinja, "greet", greeting("Hello"), activate=False)
    with pytest.raises(PreconditionFailed, match="no active version"):
        await send(renderer, "greet", {"name": "Ada"})


async def test_the_active_version_is_cached_briefly(
    uow: SqlUnitOfWorkFactory, jinja: JinjaTemplateEngine
) -> None:
    now = [100.0]
    cached = JinjaTemplateRenderer(uow, jinja, cache_seconds=5, monotonic=lambda: now[0])
    await create(uow, jinja, "greet", greeting("Hello"))
    assert (await send(cached, "greet", {"name": "a"})).template_version == 1
    await DeactivateTemplate(uow, SystemClock()).execute(ALICE, "greet")
    assert (await send(cached, "greet", {"name": "a"})).template_version == 1
    now[0] += 5.1
    with pytest.raises(PreconditionFailed):
        await send(cached, "greet", {"name": "a"})


# -- channels and escaping ----------------------------------------------------------------------


async def test_html_is_escaped_in_email_html_only(
    uow: SqlUnitOfWorkFactory, jinja: JinjaTemplateEngine, renderer: JinjaTemplateRenderer
) -> None:
    await create(
        uow,
        jinja,
        "mail",
        content(
            LocalizedContent(
                "en",
                email=EmailContent(
                    "Hi {{ name }}", "<p>Hi {{ name }}</p>{{ '<b>ok</b>' | safe }}", "Hi {{ name }}"
                ),
                sms=SmsContent("Hi {{ name }}"),
            )
        ),
    )
    evil = "<script>alert(1)</script>"
    email = await send(renderer, "mail", {"name": evil}, channel=Channel.EMAIL)
    assert email.content.html == "<p>Hi &lt;script&gt;alert(1)&lt;/script&gt;</p><b>ok</b>"
    assert email.content.title == f"Hi {evil}"
    assert email.content.body == f"Hi {evil}"
    sms = await send(renderer, "mail", {"name": evil}, channel=Channel.SMS)
    assert sms.content.body == f"Hi {evil}"


async def test_push_data_and_webhook_payload_are_rendered_in_place(
    uow: SqlUnitOfWorkFactory, jinja: JinjaTemplateEngine, renderer: JinjaTemplateRenderer
) -> None:
    variables = (NAME, VariableDeclaration("n", VariableType.INTEGER))
    await create(
        uow,
        jinja,
        "event",
        content(
            LocalizedContent(
                "en",
                push=PushContent("T {{ name }}", "B", {"order": "{{ n }}"}),
                webhook=WebhookContent(
                    {"who": "{{ name }}", "items": ["{{ n * 2 }}", 7, True], "nested": {"k": "v"}}
                ),
            ),
            variables=variables,
        ),
    )
    push = await send(renderer, "event", {"name": "Ada", "n": 21.0}, channel=Channel.PUSH)
    assert (push.content.title, dict(push.content.data)) == ("T Ada", {"order": "21"})
    hook = await send(renderer, "event", {"name": "Ada", "n": 21}, channel=Channel.WEBHOOK)
    assert (hook.content.title, hook.content.body) == ("", "")
    assert hook.content.data == {"who": "Ada", "items": ["42", 7, True], "nested": {"k": "v"}}


# -- variables ------------------------------------------------------------------------------------


async def test_variables_are_checked_against_the_declarations(
    uow: SqlUnitOfWorkFactory, jinja: JinjaTemplateEngine, renderer: JinjaTemplateRenderer
) -> None:
    variables = (NAME, VariableDeclaration("count", VariableType.INTEGER))
    await create(
        uow,
        jinja,
        "count",
        content(
            LocalizedContent("en", sms=SmsContent("{{ name }}: {{ count }}")), variables=variables
        ),
    )
    ok = await send(renderer, "count", {"name": "a", "count": 3.0}, channel=Channel.SMS)
    assert ok.content.body == "a: 3"
    with pytest.raises(ValidationFailed) as info:
        await send(renderer, "count", {"count": "3", "extra": 1}, channel=Channel.SMS)
    by_field = {v.field: v.description for v in info.value.violations}
    assert by_field == {
        "template.variables.name": "required by template 'count' version 1",
        "template.variables.count": "must be an integer (a whole number)",
        "template.variables.extra": "not declared by template 'count' version 1",
    }


async def test_an_unknown_template_names_template_name(renderer: JinjaTemplateRenderer) -> None:
    for name in ("nope", "../etc"):
        with pytest.raises(ValidationFailed) as info:
            await send(renderer, name, {})
        assert fields(info.value) == ["template.name"]


async def test_an_undeclared_variable_in_a_source_is_refused_at_save(
    uow: SqlUnitOfWorkFactory, jinja: JinjaTemplateEngine
) -> None:
    with pytest.raises(ValidationFailed) as info:
        await create(
            uow,
            jinja,
            "bad",
            content(LocalizedContent("en", in_app=InAppContent("{{ name }}", "{{ nmae }}"))),
        )
    assert fields(info.value) == ["contents[0].in_app.body"]
    assert "'nmae'" in info.value.violations[0].description
    async with uow() as u:
        assert await u.templates.get(ALICE.tenant_id, "bad") is None


async def test_a_syntax_error_names_the_source(
    uow: SqlUnitOfWorkFactory, jinja: JinjaTemplateEngine
) -> None:
    with pytest.raises(ValidationFailed) as info:
        await create(
            uow,
            jinja,
            "bad",
            content(
                LocalizedContent("en", sms=SmsContent("ok")),
                LocalizedContent("de", email=EmailContent("s", "", "line\n{% if name %}open")),
            ),
        )
    [violation] = info.value.violations
    assert violation.field == "contents[1].email.text"
    assert "line 2" in violation.description


# -- the sandbox ------------------------------------------------------------------------------

ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ self.__dict__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ lipsum.__globals__ }}",
    "{{ ().__class__.__base__.__subclasses__() }}",
    "{{ name | attr('__class__') }}",
    "{{ name['__class__'] }}",
    "{% include '/etc/passwd' %}",
    "{% import 'x' as y %}",
    "{{ name.__len__() }}",
    "{{ config }}",
    "{{ request }}",
]

EXHAUSTION = [
    "{{ 'a' * 1000000000 }}",
    "{{ [name] * 1000000000 }}",
    "{{ 9 ** (9 ** 9) }}",
    "{{ 10 ** 100000 }}",
    "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    "{% for a in range(100000) %}{{ name * 100 }}{% endfor %}",
    "{{ '%999999999s' | format(1) }}",
    "{{ '%*s' | format(999999999, 1) }}",
    "{{ '%.999999999f' % 1.0 }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '{:>{w}}'.format(1, w=999999999) }}",
    "{{ name.ljust(999999999) }}",
    "{{ name.center(999999999) }}",
    "{{ name | center(999999999) }}",
    "{{ name | indent(999999999) }}",
    "{{ [1] | batch(999999999, 0) | list }}",
    "{{ (1).to_bytes(999999999, 'big') }}",
    "{{ [].append(1) }}",
    "{{ {}.update(a=1) }}",
    "{% set ns = namespace(s='x' * 1000) %}{% for i in range(30) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
    "{{ ('x' * 200000) | replace('x', 'yyyy') }}",
    "{{ (range(100000) | list | map('string') | join('x' * 10000)) | length }}",
    "{{ [[1]] | sum(start=[]) }}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    # Block bodies are joined in one C-level step: refused at save time.
    "{% set big = 'a' * 250000 %}{% set x %}{% for i in range(4000) %}{{ big }}{% endfor %}"
    "{% endset %}{{ x | length }}",
    "{% filter upper %}{% for i in range(100000) %}{{ name * 100 }}{% endfor %}{% endfilter %}",
    "{% macro m() %}{{ caller() }}{% endmacro %}{% call m() %}x{% endcall %}",
]


@pytest.mark.parametrize("payload", ESCAPES + EXHAUSTION)
async def test_sandbox_escapes_and_exhaustion_are_refused_at_save_or_render(
    uow: SqlUnitOfWorkFactory,
    jinja: JinjaTemplateEngine,
    renderer: JinjaTemplateRenderer,
    payload: str,
) -> None:
    started = time.monotonic()
    refused = await save_error(uow, jinja, payload)
    if refused is not None:
        assert fields(refused) == ["contents[0].sms.text"]
        assert refused.violations[0].description
    else:
        with pytest.raises(ValidationFailed) as info:
            await send(renderer, "evil", {"name": "Ada"}, channel=Channel.SMS)
        assert fields(info.value) == ["template"]
        assert any(
            word in info.value.violations[0].description
            for word in ("sandbox", "longer than", "renders to more", "cannot be rendered")
        ), info.value.violations[0].description
    assert time.monotonic() - started < 5


async def test_jinja_powers_are_left_associative_so_9_9_9_is_small(
    uow: SqlUnitOfWorkFactory, jinja: JinjaTemplateEngine, renderer: JinjaTemplateRenderer
) -> None:
    # Jinja reads 9 ** 9 ** 9 as (9 ** 9) ** 9, a 258-bit number: harmless, so it renders.
    await create(
        uow, jinja, "pow", content(LocalizedContent("en", sms=SmsContent("{{ 9 ** 9 ** 9 }}")))
    )
    rendered = await send(renderer, "pow", {"name": "x"}, channel=Channel.SMS)
    assert rendered.content.body == str((9**9) ** 9)


async def test_a_loop_past_the_deadline_is_stopped_with_a_clear_error(
    uow: SqlUnitOfWorkFactory, jinja: JinjaTemplateEngine, renderer: JinjaTemplateRenderer
) -> None:
    slow = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    await create(uow, jinja, "slow", content(LocalizedContent("en", sms=SmsContent(slow))))
    started = time.monotonic()
    with pytest.raises(ValidationFailed, match="longer than 100 ms"):
        await send(renderer, "slow", {"name": "x"}, channel=Channel.SMS)
    assert time.monotonic() - started < 1


async def test_an_oversized_template_is_refused_naming_the_field(
    uow: SqlUnitOfWorkFactory, jinja: JinjaTemplateEngine
) -> None:
    big = "x" * (64 * 1024 + 1)
    with pytest.raises(ValidationFailed) as info:
        await create(uow, jinja, "big", content(LocalizedContent("en", sms=SmsContent(big))))
    assert fields(info.value) == ["contents[0].sms.text"]


def test_the_watchdog_stops_a_busy_call_and_never_fires_after_a_return() -> None:
    watchdog = Watchdog()

    def busy() -> None:
        while True:
            pass

    with pytest.raises(TimedOut):
        watchdog.run(busy, 0.05)
    # Many calls returning right around their deadline: none may leave an exception behind.
    outcomes = {"returned": 0, "timed out": 0}
    for _ in range(300):
        try:
            watchdog.run(lambda: sum(range(3000)), 0.00005)
            outcomes["returned"] += 1
        except TimedOut:
            outcomes["timed out"] += 1
    # A stray delivery would raise DeadlineExceeded somewhere in this loop.
    spin_until = time.monotonic() + 0.1
    while time.monotonic() < spin_until:
        pass
    assert sum(outcomes.values()) == 300
