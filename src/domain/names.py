"""Names operators give things (tenants, services, templates): one rule for all of them."""

from __future__ import annotations

import re

from domain.errors import ValidationFailed

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NAME_RULE = "1-64 characters: letters, digits, '_', '.', '-' (starting with a letter or digit)"


def is_valid_name(value: str) -> bool:
    return NAME_PATTERN.match(value) is not None


def check_name(field: str, value: str) -> None:
    if not is_valid_name(value):
        raise ValidationFailed.single(field, NAME_RULE)
