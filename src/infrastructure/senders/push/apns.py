"""Apple Push Notification service: HTTP/2, token-based (ES256 JWT) provider authentication."""

from __future__ import annotations

import json
import ssl
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePrivateKey

from application.ports.sender import DeliveryFailed
from domain.notification import (
    AddressRejection,
    Channel,
    DeliveryResult,
    ErrorClass,
    Notification,
    Priority,
)
from infrastructure.senders.http_failures import (
    GATEWAY_STATUSES,
    retry_after_of,
    transport_failure,
)

APNS_PRODUCTION_URL = "https://api.push.apple.com"
APNS_DEVELOPMENT_URL = "https://api.sandbox.push.apple.com"
# Apple refuses provider tokens older than an hour and new ones more often than every 20
# minutes; 50 minutes sits safely between.
PROVIDER_TOKEN_LIFETIME_SECONDS = 50 * 60
# The apns-id of a notification whose id is not a UUID: a fixed namespace keeps it stable
# across retries, so APNs (and the sandbox) can recognise a repeat.
_APNS_ID_NAMESPACE = uuid.UUID("5f0c1f53-3c1e-4c55-9a52-6d1f2a3b7e10")
# The device token itself is dead: the recipient's record stops using it.
_GONE_REASONS = frozenset(
    {"Unregistered", "ExpiredToken", "BadDeviceToken", "DeviceTokenNotForTopic"}
)
_SNIPPET_CHARS = 200


def is_alert(notification: Notification) -> bool:
    """Shown to the user (a title or body), rather than handed silently to the app."""
    return bool(notification.content.title or notification.content.body)


def apns_push_type(notification: Notification) -> str:
    return "alert" if is_alert(notification) else "background"


def apns_priority(notification: Notification) -> str:
    """ "10" (immediately) for alerts of MEDIUM and above; "5" (when convenient for the
    device's power) for LOW ones, and always for background pushes, which Apple refuses at 10."""
    if is_alert(notification) and notification.priority >= Priority.MEDIUM:
        return "10"
    return "5"


def apns_id_for(notification_id: str) -> str:
    """The notification id when it is a canonical UUID (UUIDv7 ids are), else a UUIDv5 of it:
    APNs takes only canonical UUIDs."""
    try:
        parsed = uuid.UUID(notification_id)
    except ValueError:
        parsed = None
    if parsed is not None and str(parsed) == notification_id.lower():
        return str(parsed)
    return str(uuid.uuid5(_APNS_ID_NAMESPACE, notification_id))


def apns_payload(notification: Notification) -> dict[str, Any]:
    """The JSON body: the app's data keys at the top level beside "aps" (a data key named
    "aps" cannot replace Apple's dictionary and is left out)."""
    content = notification.content
    aps: dict[str, Any]
    if is_alert(notification):
        alert = {k: v for k, v in (("title", content.title), ("body", content.body)) if v}
        aps = {"alert": alert}
    else:
        aps = {"content-available": 1}
    payload = {str(k): v for k, v in content.data.items() if k != "aps"}
    payload["aps"] = aps
    return payload


def load_apns_key(path: str | Path) -> EllipticCurvePrivateKey:
    """The private key of an APNs auth key file (AuthKey_<KEYID>.p8: PEM, PKCS#8, P-256)."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"cannot read APNs key {path}: {exc}") from exc
    if not isinstance(key, EllipticCurvePrivateKey) or not isinstance(key.curve, SECP256R1):
        raise ValueError(f"APNs key {path} is not a P-256 EC key")
    return key


class ApnsTokenSigner:
    """The provider authentication token: an ES256 JWT naming the key and the team, reused for
    50 minutes, since Apple throttles providers that make new ones too often."""

    def __init__(
        self,
        key: EllipticCurvePrivateKey,
        *,
        key_id: str,
        team_id: str,
        lifetime_seconds: float = PROVIDER_TOKEN_LIFETIME_SECONDS,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key = key
        self._key_id = key_id
        self._team_id = team_id
        self._lifetime = lifetime_seconds
        # Apple reads iat on its clock, so it is wall time; the token's age is measured on the
        # monotonic clock, which a wall clock stepping back cannot make look young.
        self._wall = wall_clock
        self._monotonic = monotonic
        self._token = ""
        self._minted_at = 0.0
        self.minted = 0

    @classmethod
    def from_file(cls, path: str | Path, *, key_id: str, team_id: str) -> ApnsTokenSigner:
        return cls(load_apns_key(path), key_id=key_id, team_id=team_id)

    def token(self) -> str:
        if not self._token or self._monotonic() - self._minted_at >= self._lifetime:
            self._mint()
        return self._token

    def refresh(self, stale: str) -> str:
        """A new token after APNs called ``stale`` expired; if another send already replaced
        it, that one. Minting never awaits, so concurrent callers cannot both mint."""
        if self._token == stale:
            self._mint()
        return self._token

    def _mint(self) -> None:
        self._token = jwt.encode(
            {"iss": self._team_id, "iat": int(self._wall())},
            self._key,
            algorithm="ES256",
            headers={"kid": self._key_id},
        )
        self._minted_at = self._monotonic()
        self.minted += 1


class ApnsProvider:
    """Sends to ``{base_url}/3/device/{token}`` over HTTP/2.

    The apns-id is the notification's (see ``apns_id_for``), so a retry after an unanswered
    attempt carries the same id. Without ``client`` the provider makes and owns an HTTP/2
    client (close it with ``aclose``); a client passed in must have HTTP/2 enabled."""

    channel = Channel.PUSH

    def __init__(
        self,
        signer: ApnsTokenSigner,
        *,
        topic: str,
        base_url: str = APNS_PRODUCTION_URL,
        client: httpx.AsyncClient | None = None,
        ca_file: str | Path = "",
        timeout: float = 10.0,
        name: str = "apns",
    ) -> None:
        if not topic:
            raise ValueError("APNs needs a topic (the app's bundle id)")
        self.name = name
        self._signer = signer
        self._topic = topic
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._owns_client = client is None
        if client is None:
            verify: ssl.SSLContext | bool = (
                ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
            )
            client = httpx.AsyncClient(http2=True, verify=verify, timeout=timeout)
        self._client = client

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def send(self, notification: Notification) -> DeliveryResult:
        address = notification.address
        if address is None or address.kind != "device_token" or not address.value.strip():
            raise self._failed(ErrorClass.PERMANENT, "the notification has no device token")
        url = f"{self._base_url}/3/device/{quote(address.value, safe='')}"
        apns_id = apns_id_for(notification.id)
        headers = {
            "apns-topic": self._topic,
            "apns-push-type": apns_push_type(notification),
            "apns-priority": apns_priority(notification),
            "apns-id": apns_id,
            "content-type": "application/json",
        }
        if notification.expires_at is not None:
            headers["apns-expiration"] = _expiration(notification.expires_at)
        body = json.dumps(
            apns_payload(notification), separators=(",", ":"), ensure_ascii=False, default=str
        ).encode("utf-8")

        token = self._signer.token()
        for first_try in (True, False):
            try:
                response = await self._client.post(
                    url,
                    content=body,
                    headers={**headers, "authorization": f"bearer {token}"},
                    timeout=self._timeout,
                )
            except httpx.TransportError as exc:
                raise transport_failure(exc, self.name, self._base_url, self._timeout) from exc
            if response.status_code == 200:
                message_id = (
                    response.headers.get("apns-unique-id")
                    or response.headers.get("apns-id")
                    or apns_id
                )
                return DeliveryResult(provider=self.name, provider_message_id=message_id)
            reason = _reason(response)
            if first_try and response.status_code == 403 and reason == "ExpiredProviderToken":
                # Our clock or cache outlived Apple's view of the token: one fresh one, at once.
                token = self._signer.refresh(token)
                continue
            raise self._classify(response, reason)
        raise AssertionError("unreachable")  # pragma: no cover

    def _classify(self, response: httpx.Response, reason: str) -> DeliveryFailed:
        status = response.status_code
        message = f"HTTP {status} {reason or '(no reason)'}"
        if status == 410 or reason in _GONE_REASONS:
            return self._failed(ErrorClass.PERMANENT, message, rejection=AddressRejection.GONE)
        if status == 429:
            return self._failed(ErrorClass.TRANSIENT, message, retry_after=retry_after_of(response))
        if status in GATEWAY_STATUSES:
            return self._failed(ErrorClass.MAYBE_ACCEPTED, message)
        if status >= 500:
            return self._failed(
                ErrorClass.PROVIDER_DOWN, message, retry_after=retry_after_of(response)
            )
        if status in (403, 404, 405):
            # Our credentials, key or base URL are wrong, not this notification: another
            # provider may well take it.
            return self._failed(ErrorClass.PROVIDER_DOWN, message)
        return self._failed(ErrorClass.PERMANENT, message)

    def _failed(
        self,
        error_class: ErrorClass,
        message: str,
        *,
        retry_after: timedelta | None = None,
        rejection: AddressRejection | None = None,
    ) -> DeliveryFailed:
        return DeliveryFailed(
            error_class, message, provider=self.name, retry_after=retry_after, rejection=rejection
        )


def _expiration(expires_at: datetime) -> str:
    """Epoch seconds after which APNs stops trying to reach an offline device. The header is
    left out when the notification never expires: "0" would tell APNs to try once and store
    nothing, losing it whenever the device is briefly offline; without it APNs stores it as
    long as its own policy allows. Never "0" here either: an instant already past is 1."""
    at = expires_at if expires_at.tzinfo is not None else expires_at.replace(tzinfo=UTC)
    return str(max(int(at.timestamp()), 1))


def _reason(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return " ".join(response.text.split())[:_SNIPPET_CHARS]
    if isinstance(payload, dict):
        return str(payload.get("reason", ""))[:_SNIPPET_CHARS]
    return ""
