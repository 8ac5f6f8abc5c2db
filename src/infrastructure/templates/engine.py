"""The Jinja2 template engine: save-time checks and bounded rendering of channel content."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import Template, TemplateError, UndefinedError
from jinja2.exceptions import SecurityError

from domain.errors import FieldViolation, ValidationFailed
from domain.notification import Content
from domain.template import (
    ChannelContent,
    EmailContent,
    InAppContent,
    PushContent,
    SmsContent,
    TemplateVersionContent,
    WebhookContent,
)
from infrastructure.templates.checks import source_problem
from infrastructure.templates.deadline import TimedOut, Watchdog
from infrastructure.templates.sandbox import MAX_VALUE_CHARS, TemplateSandbox

DEFAULT_DEADLINE_SECONDS = 0.1


class RenderFailed(Exception):
    pass


class JinjaTemplateEngine:
    """Implements application.ports.templates.TemplateEngine."""

    def __init__(
        self, deadline_seconds: float = DEFAULT_DEADLINE_SECONDS, cache_size: int = 1024
    ) -> None:
        self._deadline = deadline_seconds
        self._text = TemplateSandbox(autoescape=False)
        self._html = TemplateSandbox(autoescape=True)
        self._watchdog = Watchdog()
        # Sends are a hot path: a source is compiled once, not once per notification.
        self._compiled: Callable[[str, bool], Template] = functools.lru_cache(cache_size)(
            self._compile
        )

    # -- save time --------------------------------------------------------------------------

    async def check(self, content: TemplateVersionContent) -> None:
        await asyncio.to_thread(self.check_now, content)

    def check_now(self, content: TemplateVersionContent) -> None:
        declared = {v.name for v in content.variables}
        violations = [
            FieldViolation(source.path, problem)
            for source in content.sources()
            if (
                problem := source_problem(
                    self._html if source.html else self._text, source.text, declared
                )
            )
            is not None
        ]
        if violations:
            raise ValidationFailed(violations)

    # -- render time ------------------------------------------------------------------------

    async def render(
        self, content: ChannelContent, values: Mapping[str, Any], template_field: str
    ) -> Content:
        return await asyncio.to_thread(self.render_now, content, values, template_field)

    def render_now(
        self, content: ChannelContent, values: Mapping[str, Any], template_field: str
    ) -> Content:
        """``content`` rendered with ``values``; ValidationFailed naming ``template_field`` when
        the template is refused by the sandbox, runs too long or renders too much."""
        try:
            return self._watchdog.run(lambda: self._render(content, dict(values)), self._deadline)
        except TimedOut as error:
            raise ValidationFailed.single(template_field, f"rendering {error}") from error
        except RenderFailed as error:
            raise ValidationFailed.single(template_field, str(error)) from error

    def _render(self, content: ChannelContent, values: dict[str, Any]) -> Content:
        def text(source: str, html: bool = False) -> str:
            return self._render_one(source, values, html) if source else ""

        match content:
            case EmailContent(subject=subject, html=html, text=body):
                return Content(text(subject), text(body), html=text(html, html=True))
            case SmsContent(text=body):
                return Content("", text(body))
            case PushContent(title=title, body=body, data=data):
                return Content(text(title), text(body), data={k: text(v) for k, v in data.items()})
            case InAppContent(title=title, body=body):
                return Content(text(title), text(body))
            case WebhookContent(payload=payload):
                return Content("", "", data=self._render_json(payload, values))
        raise AssertionError(f"unknown channel content {content!r}")

    def _render_json(self, value: Any, values: dict[str, Any]) -> Any:
        if isinstance(value, str):
            return self._render_one(value, values, html=False)
        if isinstance(value, Mapping):
            return {k: self._render_json(v, values) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._render_json(v, values) for v in value]
        return value

    def _render_one(self, source: str, values: dict[str, Any], html: bool) -> str:
        try:
            template = self._compiled(source, html)
            chunks: list[str] = []
            size = 0
            for chunk in template.generate(values):
                size += len(chunk)
                if size > MAX_VALUE_CHARS:
                    raise RenderFailed(f"renders to more than {MAX_VALUE_CHARS} characters")
                chunks.append(chunk)
            return "".join(chunks)
        except SecurityError as error:
            raise RenderFailed(f"refused by the sandbox: {error}") from error
        except UndefinedError as error:
            raise RenderFailed(f"uses a variable that was not given: {error}") from error
        except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError) as error:
            raise RenderFailed(f"cannot be rendered: {error}") from error
        except (RecursionError, MemoryError) as error:
            raise RenderFailed(f"cannot be rendered: {type(error).__name__}") from error

    def _compile(self, source: str, html: bool) -> Template:
        return (self._html if html else self._text).from_string(source)
