"""SMS through Twilio's Messages API (POST /2010-04-01/Accounts/{sid}/Messages.json)."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from application.ports.sender import DeliveryFailed
from domain.notification import (
    AddressRejection,
    Channel,
    DeliveryResult,
    ErrorClass,
    Notification,
)
from infrastructure.senders.http_failures import retry_after_of
from infrastructure.senders.sms.common import (
    Refusal,
    json_object,
    post_with_deadline,
    recipient_of,
    status_failure,
    text_of,
)

# The header that carries the reference (the notification id), so that a retry after a lost
# answer can be recognised as the same message.
IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"

# Twilio error codes (https://www.twilio.com/docs/api/errors) whose handling differs from what
# the HTTP status alone says (see common.status_failure: any other 400 is PERMANENT).
TWILIO_ERRORS: Mapping[int, Refusal] = {
    21211: Refusal(ErrorClass.PERMANENT, "invalid 'To' phone number"),
    21612: Refusal(ErrorClass.PERMANENT, "cannot route to this number"),
    21614: Refusal(ErrorClass.PERMANENT, "'To' is not a mobile number"),
    21617: Refusal(ErrorClass.PERMANENT, "body exceeds 1600 characters"),
    21610: Refusal(
        ErrorClass.PERMANENT,
        "the recipient unsubscribed (replied STOP)",
        AddressRejection.UNSUBSCRIBED,
    ),
    # Our account or sender, not the recipient: another provider may well deliver it.
    20003: Refusal(ErrorClass.PROVIDER_DOWN, "authentication failed"),
    21212: Refusal(ErrorClass.PROVIDER_DOWN, "invalid 'From' number"),
    21606: Refusal(ErrorClass.PROVIDER_DOWN, "'From' cannot send SMS for this account"),
    21408: Refusal(ErrorClass.PROVIDER_DOWN, "sending to this region is not enabled"),
    21608: Refusal(ErrorClass.PROVIDER_DOWN, "trial account: the number is unverified"),
    20429: Refusal(ErrorClass.TRANSIENT, "too many requests"),
}


class TwilioProvider:
    """Text is ``title + "\\n" + body`` when both are set, else whichever is set (common.sms_text).
    Authenticates with HTTP Basic (account SID, auth token)."""

    channel = Channel.SMS

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        account_sid: str,
        auth_token: str,
        from_number: str,
        timeout: float = 10.0,
        name: str = "twilio",
    ) -> None:
        self.name = name
        self._client = client
        self._url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._auth = httpx.BasicAuth(account_sid, auth_token)
        self._from = from_number
        self._timeout = timeout

    async def send(self, notification: Notification) -> DeliveryResult:
        to = recipient_of(notification, self.name)
        text = text_of(notification, self.name)
        response = await post_with_deadline(
            self._client,
            self._url,
            provider=self.name,
            deadline=self._timeout,
            data={"To": to, "From": self._from, "Body": text},
            headers={IDEMPOTENCY_HEADER: notification.id, "Accept": "application/json"},
            auth=self._auth,
        )
        body = json_object(response)
        if response.is_success:
            # 201 Created is the acceptance; a body without a sid still is one.
            return DeliveryResult(provider=self.name, provider_message_id=str(body.get("sid", "")))
        raise self._refusal(response, body)

    def _refusal(self, response: httpx.Response, body: Mapping[str, object]) -> DeliveryFailed:
        code = body.get("code")
        detail = str(body.get("message", "")) or response.reason_phrase
        if isinstance(code, int):
            detail = f"Twilio error {code}: {detail}"
        known = TWILIO_ERRORS.get(code) if isinstance(code, int) else None
        # A 5xx or 401 says more about the provider than any code in its body does.
        if known is None or response.status_code >= 500 or response.status_code in (401, 403):
            return status_failure(response, self.name, detail)
        return DeliveryFailed(
            known.error_class,
            f"HTTP {response.status_code}: {detail} ({known.meaning})",
            provider=self.name,
            retry_after=retry_after_of(response)
            if known.error_class is ErrorClass.TRANSIENT
            else None,
            rejection=known.rejection,
        )
