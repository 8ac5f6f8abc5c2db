"""What the SMS adapters share: the text of the message, the recipient check, one deadline per
call, and the reading of HTTP statuses that carry no vendor verdict of their own."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from application.ports.sender import DeliveryFailed
from domain.notification import AddressRejection, Content, ErrorClass, Notification
from infrastructure.senders.http_failures import (
    GATEWAY_STATUSES,
    retry_after_of,
    transport_failure,
)

PHONE = "phone"

# GSM 03.38: the alphabet of a plain 7-bit SMS. Extension characters take two septets.
_GSM_EXTENSION = frozenset("\f^{}\\[~]|€")
_GSM_CHARS = _GSM_EXTENSION | frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """How one vendor error code is handled: its class and what it says about the number."""

    error_class: ErrorClass
    meaning: str
    rejection: AddressRejection | None = None


def sms_text(content: Content) -> str:
    """The message text: ``title + "\\n" + body`` when both are set, else whichever is set.

    An SMS has no subject line, so a title that was rendered for it would otherwise be lost."""
    if content.title and content.body:
        return f"{content.title}\n{content.body}"
    return content.body or content.title


def is_gsm7(text: str) -> bool:
    return all(c in _GSM_CHARS for c in text)


def segment_count(text: str) -> int:
    """How many SMS parts carry ``text``: 160 GSM septets (153 per part once split; extension
    characters take two), or else 70 UCS-2 code units (67 per part)."""
    if is_gsm7(text):
        units, single, each = len(text) + sum(c in _GSM_EXTENSION for c in text), 160, 153
    else:
        units, single, each = len(text.encode("utf-16-le")) // 2, 70, 67
    return 1 if units <= single else -(-units // each)


def recipient_of(notification: Notification, provider: str) -> str:
    """The E.164 number to send to; PERMANENT when the notification has none."""
    address = notification.address
    if address is None or address.kind != PHONE or not address.value:
        kind = "no address" if address is None else f"a {address.kind} address"
        raise DeliveryFailed(
            ErrorClass.PERMANENT,
            f"an SMS needs a phone address, the notification has {kind}",
            provider=provider,
        )
    return address.value


def text_of(notification: Notification, provider: str) -> str:
    text = sms_text(notification.content)
    if not text:
        raise DeliveryFailed(ErrorClass.PERMANENT, "the SMS text is empty", provider=provider)
    return text


async def post_with_deadline(
    client: httpx.AsyncClient,
    url: str,
    *,
    provider: str,
    deadline: float,
    **request: Any,
) -> httpx.Response:
    """POST and read the whole answer within ``deadline`` seconds, or raise the classified
    transport failure. Redirects are never followed: a vendor API does not redirect a send, so
    one means a wrong base URL, and following it would hand the credentials to another host."""
    origin = _origin(url)
    try:
        # The per-phase httpx timeouts alone would let a server that trickles bytes hold the
        # worker past the deadline. A deadline that expires while still connecting is read as
        # MAYBE_ACCEPTED by transport_failure: wrong but safe (a retry here, never a failover).
        async with asyncio.timeout(deadline):
            return await client.post(url, timeout=deadline, follow_redirects=False, **request)
    except (TimeoutError, httpx.TransportError) as exc:
        raise transport_failure(exc, provider, origin, deadline) from exc


def json_object(response: httpx.Response) -> Mapping[str, Any]:
    """The response body as a JSON object, or empty when it is not one."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def status_failure(response: httpx.Response, provider: str, detail: str) -> DeliveryFailed:
    """An HTTP error status read on its own, for answers no vendor code explains.

    401/403 mean our credentials; 404/405 and redirects a wrong base URL; 5xx an unwell
    provider: none of these says anything about the recipient, so another provider may be tried
    at once (PROVIDER_DOWN). 429 and 408 pass with time (TRANSIENT). Any other 4xx is a request
    the vendor will refuse however often it is sent (PERMANENT)."""
    status = response.status_code
    message = f"HTTP {status}{f': {detail}' if detail else ''}"
    if status in (408, 429):
        return DeliveryFailed(
            ErrorClass.TRANSIENT, message, provider=provider, retry_after=retry_after_of(response)
        )
    if status in GATEWAY_STATUSES:
        return DeliveryFailed(ErrorClass.MAYBE_ACCEPTED, message, provider=provider)
    if status >= 500 or status in (401, 403, 404, 405) or 300 <= status < 400:
        return DeliveryFailed(ErrorClass.PROVIDER_DOWN, message, provider=provider)
    return DeliveryFailed(ErrorClass.PERMANENT, message, provider=provider)


def _origin(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii')}"
