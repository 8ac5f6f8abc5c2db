"""Firebase Cloud Messaging, HTTP v1 API: one message per device token, OAuth 2 bearer auth."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote

import httpx

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
from infrastructure.senders.push.apns import apns_priority, apns_push_type, is_alert
from infrastructure.senders.push.google_oauth import TokenUnavailable

FCM_URL = "https://fcm.googleapis.com"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_SNIPPET_CHARS = 200

# The device token will never work again for this project: the recipient's record stops
# using it. INVALID_ARGUMENT is deliberately not here: FCM answers it for a bad payload as
# well as a malformed token, and a token FCM cannot parse may still be a valid APNs token that
# reached FCM only because APNs was not configured; invalidating it would lose the device.
_GONE_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})


class AccessTokens(Protocol):
    async def token(self) -> str:
        """A valid OAuth access token; raises TokenUnavailable."""
        ...

    def invalidate(self, token: str | None = None) -> None: ...


def fcm_message(notification: Notification, now: datetime) -> dict[str, Any]:
    """The v1 ``message`` for one device. FCM data values are strings only: other JSON values
    travel JSON-encoded."""
    n = notification
    message: dict[str, Any] = {"token": n.address.value if n.address else ""}
    shown = {k: v for k, v in (("title", n.content.title), ("body", n.content.body)) if v}
    if shown:
        message["notification"] = shown
    if n.content.data:
        message["data"] = {str(k): _data_value(v) for k, v in n.content.data.items()}
    android: dict[str, Any] = {"priority": "HIGH" if n.priority >= Priority.HIGH else "NORMAL"}
    apns_headers = {"apns-priority": apns_priority(n), "apns-push-type": apns_push_type(n)}
    if n.expires_at is not None:
        expires_at = n.expires_at if n.expires_at.tzinfo else n.expires_at.replace(tzinfo=UTC)
        left = max(0, math.ceil((expires_at - now).total_seconds()))
        android["ttl"] = f"{left}s"
        apns_headers["apns-expiration"] = str(max(int(expires_at.timestamp()), 1))
    message["android"] = android
    apns: dict[str, Any] = {"headers": apns_headers}
    if not is_alert(n):
        # An iOS app wakes for a data-only message only when told it is a background push.
        apns["payload"] = {"aps": {"content-available": 1}}
    message["apns"] = apns
    return message


@dataclass(frozen=True, slots=True)
class FcmError:
    """A Google RPC error body: {"error": {"code", "message", "status", "details": [...]}}."""

    status: str = ""
    message: str = ""
    # The FcmError detail's errorCode, the most specific word on what went wrong.
    error_code: str = ""

    @classmethod
    def of(cls, response: httpx.Response) -> FcmError:
        try:
            payload = response.json()
        except ValueError:
            return cls(message=" ".join(response.text.split())[:_SNIPPET_CHARS])
        error = payload.get("error") if isinstance(payload, dict) else None
        if not isinstance(error, dict):
            return cls()
        code = ""
        for detail in error.get("details") or ():
            if isinstance(detail, dict) and detail.get("@type") == FCM_ERROR_TYPE:
                code = str(detail.get("errorCode", ""))
        return cls(
            status=str(error.get("status", "")),
            message=str(error.get("message", ""))[:_SNIPPET_CHARS],
            error_code=code,
        )

    def describe(self, http_status: int) -> str:
        words = [f"HTTP {http_status}", self.error_code or self.status]
        text = " ".join(w for w in words if w)
        return f"{text}: {self.message}" if self.message else text


class FcmProvider:
    """POSTs to ``{base_url}/v1/projects/{project_id}/messages:send``.

    FCM v1 carries no idempotency key, so a retry after an unanswered attempt may show the
    message twice; that is the protocol's limit, not one this adapter can lift."""

    channel = Channel.PUSH

    def __init__(
        self,
        client: httpx.AsyncClient,
        tokens: AccessTokens,
        *,
        project_id: str,
        base_url: str = FCM_URL,
        timeout: float = 10.0,
        name: str = "fcm",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.name = name
        self._client = client
        self._tokens = tokens
        self._base_url = base_url.rstrip("/")
        self._url = f"{self._base_url}/v1/projects/{quote(project_id, safe='')}/messages:send"
        self._timeout = timeout
        self._clock = clock

    async def send(self, notification: Notification) -> DeliveryResult:
        address = notification.address
        if address is None or address.kind != "device_token" or not address.value.strip():
            raise self._failed(ErrorClass.PERMANENT, "the notification has no device token")
        body = json.dumps(
            {"message": fcm_message(notification, self._clock())},
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode("utf-8")

        for first_try in (True, False):
            access = await self._access_token()
            try:
                response = await self._client.post(
                    self._url,
                    content=body,
                    headers={
                        "authorization": f"Bearer {access}",
                        "content-type": "application/json; charset=utf-8",
                    },
                    timeout=self._timeout,
                )
            except httpx.TransportError as exc:
                raise transport_failure(exc, self.name, self._base_url, self._timeout) from exc
            if response.status_code == 200:
                return DeliveryResult(provider=self.name, provider_message_id=_name(response))
            error = FcmError.of(response)
            # THIRD_PARTY_AUTH_ERROR is a 401 about the project's APNs or web push credentials,
            # which a new access token does not mend.
            if (
                first_try
                and response.status_code == 401
                and error.error_code != "THIRD_PARTY_AUTH_ERROR"
            ):
                # Revoked or expired early: one new token, at once.
                self._tokens.invalidate(access)
                continue
            raise self._classify(response, error)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _access_token(self) -> str:
        try:
            return await self._tokens.token()
        except TokenUnavailable as exc:
            raise self._failed(
                ErrorClass.PROVIDER_DOWN, exc.message, retry_after=exc.retry_after
            ) from exc

    def _classify(self, response: httpx.Response, error: FcmError) -> DeliveryFailed:
        status = response.status_code
        message = error.describe(status)
        if error.error_code in _GONE_CODES:
            return self._failed(ErrorClass.PERMANENT, message, rejection=AddressRejection.GONE)
        if status == 429 or error.error_code == "QUOTA_EXCEEDED":
            return self._failed(ErrorClass.TRANSIENT, message, retry_after=retry_after_of(response))
        if status in GATEWAY_STATUSES:
            return self._failed(ErrorClass.MAYBE_ACCEPTED, message)
        if status >= 500 or error.error_code in ("UNAVAILABLE", "INTERNAL"):
            return self._failed(
                ErrorClass.PROVIDER_DOWN, message, retry_after=retry_after_of(response)
            )
        if status in (401, 403, 404):
            # Credentials, permissions, project or base URL: ours to fix, not the message's,
            # and another provider may take it meanwhile.
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


def _data_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True, default=str)


def _name(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return ""
    name = payload.get("name") if isinstance(payload, dict) else None
    return name if isinstance(name, str) else ""
