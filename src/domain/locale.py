"""BCP 47 language tags: checking them and the fallback chain from most to least specific."""

from __future__ import annotations

import re

from domain.errors import ValidationFailed

# language [-script] [-region] [-variant]*; private use and extensions are not used here.
_TAG = re.compile(
    r"^(?P<lang>[A-Za-z]{2,3})"
    r"(?:-(?P<script>[A-Za-z]{4}))?"
    r"(?:-(?P<region>[A-Za-z]{2}|[0-9]{3}))?"
    r"(?P<variants>(?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*)$"
)
MAX_LOCALE_CHARS = 35


def normalize_locale(tag: str, field: str = "locale") -> str:
    """The tag in canonical case (zh-Hant-TW, de-CH); '' stays ''. ValidationFailed naming
    ``field`` if it is not a language tag. '_' is accepted for '-' (de_CH), as POSIX writes it."""
    if not tag:
        return ""
    m = _TAG.fullmatch(tag.replace("_", "-")) if len(tag) <= MAX_LOCALE_CHARS else None
    if m is None:
        raise ValidationFailed.single(
            field, f"{tag!r} is not a BCP 47 language tag (e.g. en, de-CH, zh-Hant-TW)"
        )
    parts = [m["lang"].lower()]
    if m["script"]:
        parts.append(m["script"].title())
    if m["region"]:
        parts.append(m["region"].upper())
    parts.extend(v.lower() for v in m["variants"].split("-") if v)
    return "-".join(parts)


def locale_chain(tag: str, default: str = "") -> list[str]:
    """Most specific first, then the default: zh-Hant-TW -> zh-Hant -> zh -> default.
    ``tag`` must already be normalized; duplicates are left out."""
    parts = [p for p in tag.split("-") if p]
    chain = ["-".join(parts[:i]) for i in range(len(parts), 0, -1)]
    if default not in chain:
        chain.append(default)
    return chain
