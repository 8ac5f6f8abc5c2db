"""Protobuf enum numbers to the names the application uses, without losing unknown numbers."""

from __future__ import annotations

from typing import Any


def enum_name(wrapper: Any, prefix: str, value: int) -> str:
    """``DEVICE_PLATFORM_IOS`` -> ``IOS``; 0 (unset) -> ''; a number the contract does not
    define -> the number as text, so the application can name it in its refusal."""
    if value == 0:
        return ""
    try:
        name: str = wrapper.Name(value)
    except ValueError:
        return str(value)
    return name.removeprefix(prefix)
