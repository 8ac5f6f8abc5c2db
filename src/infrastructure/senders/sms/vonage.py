"""SMS through the Vonage (Nexmo) SMS API (POST /sms/json).

The API answers HTTP 200 whether or not it took the message; the verdict is the ``status`` of
each entry of ``messages`` (one per part of a long text), as in this table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from application.ports.sender import DeliveryFailed
from domain.notification import (
    AddressRejection,
    Channel,
    DeliveryResult,
    ErrorClass,
    Notification,
)
from infrastructure.senders.sms.common import (
    Refusal,
    is_gsm7,
    json_object,
    post_with_deadline,
    recipient_of,
    status_failure,
    text_of,
)

ACCEPTED = "0"

# Vonage SMS API statuses (https://developer.vonage.com/messaging/sms/guides/troubleshooting-sms).
# The recipient or the message: PERMANENT. Our account, credentials or sender: PROVIDER_DOWN,
# since another provider may deliver it. Throughput: TRANSIENT.
VONAGE_STATUSES: Mapping[str, Refusal] = {
    "1": Refusal(ErrorClass.TRANSIENT, "Throttled: faster than the account's limit"),
    "2": Refusal(ErrorClass.PERMANENT, "Missing Parameters"),
    "3": Refusal(ErrorClass.PERMANENT, "Invalid Parameters (e.g. an invalid number)"),
    "4": Refusal(ErrorClass.PROVIDER_DOWN, "Invalid Credentials"),
    "5": Refusal(ErrorClass.PROVIDER_DOWN, "Internal Error"),
    "6": Refusal(ErrorClass.PERMANENT, "Invalid Message: unroutable, e.g. unknown prefix"),
    "7": Refusal(
        ErrorClass.PERMANENT,
        "Number Barred: the number may not receive messages",
        AddressRejection.UNSUBSCRIBED,
    ),
    "8": Refusal(ErrorClass.PROVIDER_DOWN, "Partner Account Barred"),
    "9": Refusal(ErrorClass.PROVIDER_DOWN, "Partner Quota Violation: not enough credit"),
    "10": Refusal(ErrorClass.TRANSIENT, "Too Many Existing Binds"),
    "11": Refusal(ErrorClass.PROVIDER_DOWN, "Account Not Enabled For HTTP"),
    "12": Refusal(ErrorClass.PERMANENT, "Message Too Long"),
    "14": Refusal(ErrorClass.PROVIDER_DOWN, "Invalid Signature"),
    "15": Refusal(ErrorClass.PROVIDER_DOWN, "Invalid Sender Address"),
    "22": Refusal(ErrorClass.PERMANENT, "Invalid Network Code"),
    "23": Refusal(ErrorClass.PROVIDER_DOWN, "Invalid Callback Url"),
    # A demo account may only send to whitelisted numbers; another provider is not so limited.
    "29": Refusal(ErrorClass.PROVIDER_DOWN, "Non-Whitelisted Destination"),
    "32": Refusal(ErrorClass.PROVIDER_DOWN, "Signature And API Secret Disallowed"),
    "33": Refusal(ErrorClass.PERMANENT, "Number De-activated"),
}
# A status this table does not know still certainly refused the message.
_UNKNOWN = Refusal(ErrorClass.PROVIDER_DOWN, "unknown status")


def message_type(text: str) -> str:
    """type=unicode for text beyond the GSM 03.38 alphabet, which Vonage would deliver mangled
    as type=text."""
    return "text" if is_gsm7(text) else "unicode"


class VonageProvider:
    """Sends form-encoded api_key, api_secret, from, to (E.164 digits without the '+'), text,
    type and client-ref (the notification id: the reference). Text is ``title + "\\n" + body``
    when both are set, else whichever is set (common.sms_text)."""

    channel = Channel.SMS

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        api_key: str,
        api_secret: str,
        from_number: str,
        timeout: float = 10.0,
        name: str = "vonage",
    ) -> None:
        self.name = name
        self._client = client
        self._url = f"{base_url.rstrip('/')}/sms/json"
        self._credentials = {"api_key": api_key, "api_secret": api_secret}
        # A numeric sender goes without its '+', like the recipient; an alphanumeric one as is.
        self._from = from_number.removeprefix("+")
        self._timeout = timeout

    async def send(self, notification: Notification) -> DeliveryResult:
        to = recipient_of(notification, self.name).removeprefix("+")
        text = text_of(notification, self.name)
        response = await post_with_deadline(
            self._client,
            self._url,
            provider=self.name,
            deadline=self._timeout,
            data={
                **self._credentials,
                "from": self._from,
                "to": to,
                "text": text,
                "type": message_type(text),
                "client-ref": notification.id,
            },
            headers={"Accept": "application/json"},
        )
        if not response.is_success:
            body = json_object(response)
            detail = str(body.get("title") or body.get("error-text") or response.reason_phrase)
            raise status_failure(response, self.name, detail)
        parts = _parts(response)
        if parts is None:
            # It answered 200, so it may well have taken the message: only a retry here, with the
            # same client-ref, is safe.
            raise DeliveryFailed(
                ErrorClass.MAYBE_ACCEPTED,
                "HTTP 200 without a readable messages list",
                provider=self.name,
            )
        refused = [p for p in parts if str(p.get("status")) != ACCEPTED]
        if not refused:
            return DeliveryResult(
                provider=self.name, provider_message_id=str(parts[0].get("message-id", ""))
            )
        raise self._refusal(refused[0], accepted_parts=len(parts) - len(refused))

    def _refusal(self, part: Mapping[str, Any], *, accepted_parts: int) -> DeliveryFailed:
        status = str(part.get("status"))
        known = VONAGE_STATUSES.get(status, _UNKNOWN)
        message = f"Vonage status {status}: {part.get('error-text', '')} ({known.meaning})"
        error_class = known.error_class
        if accepted_parts and error_class is ErrorClass.PROVIDER_DOWN:
            # Some parts of the text went out: another provider would send the whole text again.
            error_class = ErrorClass.TRANSIENT
            message += f"; {accepted_parts} other part(s) were accepted"
        return DeliveryFailed(error_class, message, provider=self.name, rejection=known.rejection)


def _parts(response: httpx.Response) -> Sequence[Mapping[str, Any]] | None:
    messages = json_object(response).get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    if not all(isinstance(m, dict) and "status" in m for m in messages):
        return None
    return messages
