"""Checking the values a send or a preview gives against a version's declarations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain.errors import Violations
from domain.template.content import TemplateVersionContent, VariableType

_ARTICLE = {
    VariableType.STRING: "a string",
    VariableType.INTEGER: "an integer (a whole number)",
    VariableType.NUMBER: "a number",
    VariableType.BOOLEAN: "a boolean",
    VariableType.LIST: "a list",
    VariableType.OBJECT: "an object",
    VariableType.ANY: "a JSON value",
}


def _fits(kind: VariableType, value: Any) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    match kind:
        case VariableType.STRING:
            return isinstance(value, str)
        case VariableType.INTEGER:
            # protobuf Struct carries every number as a double: 3.0 is the integer 3.
            return number and (isinstance(value, int) or float(value).is_integer())
        case VariableType.NUMBER:
            return number
        case VariableType.BOOLEAN:
            return isinstance(value, bool)
        case VariableType.LIST:
            return isinstance(value, list | tuple)
        case VariableType.OBJECT:
            return isinstance(value, Mapping)
        case _:
            return True


def checked_values(
    content: TemplateVersionContent,
    values: Mapping[str, Any],
    template: str,
    version: int,
    field: str = "template.variables",
) -> dict[str, Any]:
    """The values to render with (whole INTEGER floats made ints), or ValidationFailed naming
    every missing, mistyped or undeclared variable as ``<field>.<name>``."""
    v = Violations()
    which = f"template {template!r} version {version}"
    result: dict[str, Any] = {}
    for decl in content.variables:
        if decl.name not in values:
            if decl.required:
                v.add(f"{field}.{decl.name}", f"required by {which}")
            continue
        value = values[decl.name]
        if not _fits(decl.type, value):
            v.add(f"{field}.{decl.name}", f"must be {_ARTICLE[decl.type]}")
            continue
        if decl.type is VariableType.INTEGER and isinstance(value, float):
            value = int(value)
        result[decl.name] = value
    for name in values:
        if content.declared(name) is None:
            v.add(f"{field}.{name}", f"not declared by {which}")
    v.raise_if_any()
    return result
