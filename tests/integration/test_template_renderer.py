"""JinjaTemplateRenderer over templates stored in the real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from application.ports.repositories import TemplateVersion
from application.use_cases.administration import PutTemplate
from domain.errors import ValidationFailed
from domain.notification import Channel, Content, Rendered, TemplateRef
from infrastructure.clock import SystemClock
from infrastructure.persistence.tables import templates as templates_table
from infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from infrastructure.templates import JinjaTemplateRenderer

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TENANT = "tenant-a"


@pytest.fixture
def renderer(uow: SqlUnitOfWorkFactory) -> JinjaTemplateRenderer:
    return JinjaTemplateRenderer(uow, cache_seconds=0)


async def put(
    uow: SqlUnitOfWorkFactory, name: str, title: str, body: str, tenant: str = TENANT
) -> TemplateVersion:
    async with uow() as u:
        stored = await u.templates.put(TemplateVersion(tenant, name, 0, "", title, body), T0)
        await u.commit()
    return stored


async def put_locales(engine: AsyncEngine, name: str, version: int, **by_locale: str) -> None:
    """One version in several locales (keyword ``default`` is the '' locale; ``_`` means ``-``)."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(templates_table),
            [
                {
                    "tenant_id": TENANT,
                    "name": name,
                    "version": version,
                    "locale": "" if key == "default" else key.replace("_", "-"),
                    "title": f"[{key}] {{{{ name }}}}",
                    "body": text,
                    "created_at": T0,
                }
                for key, text in by_locale.items()
            ],
        )


def fields(error: ValidationFailed) -> list[str]:
    return [v.field for v in error.violations]


async def render(
    renderer: JinjaTemplateRenderer, name: str, variables: dict[str, object], locale: str = ""
) -> Rendered:
    return await renderer.render(TENANT, TemplateRef(name, variables, locale), Channel.EMAIL)


async def test_renders_the_variables(
    uow: SqlUnitOfWorkFactory, renderer: JinjaTemplateRenderer
) -> None:
    await put(uow, "shipped", "Order {{ order.id }} shipped", "Hi {{ name | title }}, {{ n + 1 }}")
    stored = await put(
        uow, "shipped", "Order {{ order.id }} shipped", "Hello {{ name | title }}, {{ n + 1 }}!"
    )

    rendered = await render(renderer, "shipped", {"order": {"id": 42}, "name": "ada l", "n": 2})

    assert rendered == Rendered(
        Content("Order 42 shipped", "Hello Ada L, 3!"), "shipped", stored.version, ""
    )
    assert rendered.template_version == 2


async def test_output_is_not_html_escaped_and_loops_work(
    uow: SqlUnitOfWorkFactory, renderer: JinjaTemplateRenderer
) -> None:
    await put(uow, "list", "{{ who }}", "{% for i in items %}<{{ i }}>{% endfor %}")
    rendered = await render(renderer, "list", {"who": "A & B", "items": ["x", "y"]})
    assert rendered.content == Content("A & B", "<x><y>")


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("de-CH", "Grüezi"),
        ("de_CH", "Grüezi"),
        ("de-AT", "Hallo"),
        ("de", "Hallo"),
        ("fr-FR", "Hello"),
        ("", "Hello"),
    ],
)
async def test_locale_falls_back_to_the_language_then_the_default(
    uow: SqlUnitOfWorkFactory,
    clean_db: AsyncEngine,
    renderer: JinjaTemplateRenderer,
    locale: str,
    expected: str,
) -> None:
    await put_locales(clean_db, "greet", 1, default="Hello", de="Hallo", de_CH="Grüezi")

    rendered = await render(renderer, "greet", {"name": "Ada"}, locale)

    assert rendered.content.body == expected
    assert rendered.template_version == 1
    chosen = {"Grüezi": "de-CH", "Hallo": "de", "Hello": ""}[expected]
    assert rendered.locale == chosen
    assert rendered.content.title == f"[{chosen.replace('-', '_') or 'default'}] Ada"


async def test_an_older_version_is_never_used(
    uow: SqlUnitOfWorkFactory, clean_db: AsyncEngine, renderer: JinjaTemplateRenderer
) -> None:
    await put_locales(clean_db, "greet", 1, default="Old hello", de="Altes Hallo")
    await put_locales(clean_db, "greet", 2, default="New hello")
    rendered = await render(renderer, "greet", {"name": "Ada"}, "de")
    assert (rendered.content.body, rendered.template_version, rendered.locale) == (
        "New hello",
        2,
        "",
    )


async def test_templates_are_per_tenant(
    uow: SqlUnitOfWorkFactory, renderer: JinjaTemplateRenderer
) -> None:
    await put(uow, "private", "t", "b", tenant="tenant-b")
    with pytest.raises(ValidationFailed) as caught:
        await render(renderer, "private", {})
    assert fields(caught.value) == ["template.name"]


async def test_an_unknown_template_names_template_name(renderer: JinjaTemplateRenderer) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await render(renderer, "nope", {})
    assert fields(caught.value) == ["template.name"]
    assert "nope" in caught.value.violations[0].description

    with pytest.raises(ValidationFailed) as caught:
        await render(renderer, "", {})
    assert fields(caught.value) == ["template.name"]


async def test_a_missing_variable_is_named(
    uow: SqlUnitOfWorkFactory, renderer: JinjaTemplateRenderer
) -> None:
    await put(uow, "shipped", "Order {{ order_id }}", "Hi {{ name }}, see {{ url }}")

    with pytest.raises(ValidationFailed) as caught:
        await render(renderer, "shipped", {"order_id": 1})
    assert fields(caught.value) == ["template.variables.name", "template.variables.url"]

    with pytest.raises(ValidationFailed) as caught:
        await render(renderer, "shipped", {"name": "x", "url": "y"})
    assert fields(caught.value) == ["template.variables.order_id"]


async def test_a_missing_attribute_of_a_given_variable_is_a_validation_error(
    uow: SqlUnitOfWorkFactory, renderer: JinjaTemplateRenderer
) -> None:
    await put(uow, "shipped", "t", "Order {{ order.id }}")
    with pytest.raises(ValidationFailed) as caught:
        await render(renderer, "shipped", {"order": {"number": 1}})
    assert fields(caught.value)[0].startswith("template.variables")


async def test_an_unusable_variable_is_a_validation_error(
    uow: SqlUnitOfWorkFactory, renderer: JinjaTemplateRenderer
) -> None:
    await put(uow, "math", "t", "{{ a / b }}")
    with pytest.raises(ValidationFailed) as caught:
        await render(renderer, "math", {"a": 1, "b": 0})
    assert fields(caught.value) == ["template.variables"]


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ user.__class__.__init__.__globals__ }}",
        "{{ user.__dict__ }}",
        "{{ items.append(1) }}",
    ],
)
async def test_the_sandbox_refuses_escapes_as_validation_errors(
    uow: SqlUnitOfWorkFactory, renderer: JinjaTemplateRenderer, source: str
) -> None:
    class User:
        name = "ada"

    await put(uow, "evil", "t", source)
    with pytest.raises(ValidationFailed) as caught:
        await render(renderer, "evil", {"user": User(), "items": []})
    [violation] = caught.value.violations
    assert violation.field == "template"
    assert violation.description.startswith("refused by the sandbox")
    assert "unsafe" in violation.description


async def test_check_source_names_the_field_with_the_syntax_error(
    renderer: JinjaTemplateRenderer,
) -> None:
    renderer.check_source("Order {{ id }}", "{% if x %}yes{% endif %}")

    with pytest.raises(ValidationFailed) as caught:
        renderer.check_source("Order {{ id ", "fine")
    assert fields(caught.value) == ["title"]
    assert "syntax error" in caught.value.violations[0].description

    with pytest.raises(ValidationFailed) as caught:
        renderer.check_source("fine", "line one\n{% if x %}never closed")
    assert fields(caught.value) == ["body"]
    assert "line 2" in caught.value.violations[0].description

    with pytest.raises(ValidationFailed) as caught:
        renderer.check_source("x" * (64 * 1024 + 1), "fine")
    assert fields(caught.value) == ["title"]


async def test_put_template_refuses_a_bad_source_and_stores_nothing(
    uow: SqlUnitOfWorkFactory, renderer: JinjaTemplateRenderer
) -> None:
    put_template = PutTemplate(uow, renderer, SystemClock())
    with pytest.raises(ValidationFailed) as caught:
        await put_template.execute(TENANT, "broken", "ok", "{{ oops")
    assert fields(caught.value) == ["body"]
    async with uow() as u:
        assert await u.templates.latest(TENANT, "broken") == []

    stored = await put_template.execute(TENANT, "good", "Hi {{ name }}", "Body")
    assert stored.version == 1
    assert (await render(renderer, "good", {"name": "Ada"})).content.title == "Hi Ada"


async def test_a_template_may_use_jinja_globals(
    uow: SqlUnitOfWorkFactory, renderer: JinjaTemplateRenderer
) -> None:
    # Globals are not variables the caller must supply.
    await put(uow, "stars", "t", "{% for i in range(n) %}*{% endfor %}{{ dict(a=1)['a'] }}")
    rendered = await render(renderer, "stars", {"n": 3})
    assert rendered.content.body == "***1"


async def test_adding_a_translation_keeps_the_default_locale(
    uow: SqlUnitOfWorkFactory, renderer: JinjaTemplateRenderer
) -> None:
    put_template = PutTemplate(uow, renderer, SystemClock())
    await put_template.execute(TENANT, "greet", "Hi {{ name }}", "Hello")
    await put_template.execute(TENANT, "greet", "Hallo {{ name }}", "Hallo", locale="de")

    assert (await render(renderer, "greet", {"name": "Ada"}, "de")).content.body == "Hallo"
    default = await render(renderer, "greet", {"name": "Ada"}, "fr")
    assert (default.content.body, default.locale) == ("Hello", "")
