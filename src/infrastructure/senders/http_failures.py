"""How an HTTP provider call failed, in the terms failover and retries decide on."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Protocol

import httpx

from application.ports.sender import DeliveryFailed
from domain.notification import ErrorClass

# A gateway's answer for an upstream that timed out or broke off: the provider behind it may
# have taken the message, so it is retried there, never sent through another provider.
GATEWAY_STATUSES = frozenset({502, 504})


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """A Retry-After header (delay seconds or an HTTP-date) as a delay; None when absent or
    unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return timedelta(seconds=int(value))
    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return max(at - now, timedelta(0))


class _WithHeaders(Protocol):
    # httpx's and aiohttp's responses both: case-insensitive header lookup.
    @property
    def headers(self) -> Mapping[str, str]: ...


def retry_after_of(response: _WithHeaders) -> timedelta | None:
    return parse_retry_after(response.headers.get("retry-after"), datetime.now(UTC))


def transport_failure(
    error: Exception, provider: str, origin: str, timeout: float
) -> DeliveryFailed:
    """Classify an exception raised while talking to a provider.

    Nothing was sent when the connection could not be made: another provider may be tried at
    once (PROVIDER_DOWN). Once the request may have gone out, silence can hide an acceptance:
    MAYBE_ACCEPTED, retried on this provider only, with the same reference."""
    if isinstance(error, httpx.ConnectTimeout | httpx.ConnectError | httpx.PoolTimeout):
        return DeliveryFailed(
            ErrorClass.PROVIDER_DOWN,
            f"cannot connect to {origin}: {type(error).__name__} {error}".strip(),
            provider=provider,
        )
    if isinstance(error, TimeoutError | httpx.TimeoutException):
        return DeliveryFailed(
            ErrorClass.MAYBE_ACCEPTED,
            f"no answer from {origin} within {timeout}s",
            provider=provider,
        )
    return DeliveryFailed(
        ErrorClass.MAYBE_ACCEPTED,
        f"{type(error).__name__} talking to {origin}: {error or 'connection lost'}",
        provider=provider,
    )
