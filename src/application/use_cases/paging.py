"""AIP-158 page tokens: opaque to callers, and valid only with the request that produced them."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from application.fingerprint import fingerprint
from application.ports.repositories import PageCursor
from domain.errors import ValidationFailed

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(requested: int, default: int = DEFAULT_PAGE_SIZE) -> int:
    """The page size to use: ``default`` for 0; INVALID_ARGUMENT outside 0..MAX_PAGE_SIZE."""
    if requested < 0 or requested > MAX_PAGE_SIZE:
        raise ValidationFailed.single("page_size", f"must be 0 to {MAX_PAGE_SIZE}")
    return requested or default


def encode_page_token(position: dict[str, Any], request: Any) -> str:
    """A token for the page after ``position`` (JSON values), bound to ``request`` (the filters:
    any JSON-able value; the same filters must come with the token)."""
    raw = json.dumps({"p": position, "q": fingerprint(request)[:16]}, default=str)
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_page_token(token: str, request: Any) -> dict[str, Any] | None:
    """The position a token stands for (None for ''); INVALID_ARGUMENT for a token this API did
    not issue or one issued for other filters."""
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        position = data["p"]
        issued_for = data["q"]
        if not isinstance(position, dict):
            raise TypeError(position)
    except (binascii.Error, ValueError, KeyError, TypeError) as error:
        raise ValidationFailed.single("page_token", "is not a token this API issued") from error
    if issued_for != fingerprint(request)[:16]:
        raise ValidationFailed.single(
            "page_token", "was issued for other filters; repeat the same filters or drop it"
        )
    return position


# Listings ordered by a unique name (templates, categories) page by the last name returned.


def after_name(page_token: str, request: Any) -> str:
    """The name the requested page starts after ('' for the first page)."""
    position = decode_page_token(page_token, request)
    after = position.get("after", "") if position is not None else ""
    if not isinstance(after, str):
        raise ValidationFailed.single("page_token", "is not a token this API issued")
    return after


def name_page(
    found: Sequence[T], size: int, name: Callable[[T], str], request: Any
) -> tuple[list[T], str]:
    """The page and the next page's token from ``found``, fetched with one extra row beyond
    ``size``: that row tells whether another page follows."""
    page = list(found[:size])
    token = encode_page_token({"after": name(page[-1])}, request) if len(found) > size else ""
    return page, token


# Listings ordered by a time, newest first, page by the (time, id) of the last row returned.


def encode_cursor(cursor: PageCursor, request: Any) -> str:
    return encode_page_token({"at": cursor.at.isoformat(), "id": cursor.id}, request)


def decode_cursor(page_token: str, request: Any) -> PageCursor | None:
    """The (time, id) the requested page starts after (None for the first page)."""
    position = decode_page_token(page_token, request)
    if position is None:
        return None
    try:
        return PageCursor(datetime.fromisoformat(position["at"]), str(position["id"]))
    except (KeyError, TypeError, ValueError) as error:
        raise ValidationFailed.single("page_token", "is not a token this API issued") from error


def cursor_page(
    found: Sequence[T], size: int, cursor: Callable[[T], PageCursor], request: Any
) -> tuple[list[T], str]:
    """As name_page, for listings paged by a PageCursor."""
    page = list(found[:size])
    token = encode_cursor(cursor(page[-1]), request) if len(found) > size else ""
    return page, token
