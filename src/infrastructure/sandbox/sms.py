"""Sandbox SMS peers: ASGI apps shaped like Twilio's Messages API and the Vonage SMS API.

Serve them with ``serve_asgi``. Each checks the credentials it was built with, the required
fields and the E.164 numbers, answers in its vendor's shape, and journals every message it
accepts as {"at", "to", "from", "body", "reference", "message_id", "peer"} ("to" always in
E.164 with its '+'). A repeated reference (Twilio: the ``I-Twilio-Idempotency-Token`` header;
Vonage: ``client-ref``) gets the first answer again and is journalled once.

Magic recipients, modelled on Twilio's test numbers, show each refusal in dev mode:

    +15005550001  invalid number          Twilio 400 / 21211   Vonage status 3
    +15005550002  cannot be routed        Twilio 400 / 21612   Vonage status 6
    +15005550003  region not enabled      Twilio 400 / 21408   Vonage status 29
    +15005550004  unsubscribed (STOP)     Twilio 400 / 21610   Vonage status 7 (barred)
    +15005550009  not a mobile number     Twilio 400 / 21614   Vonage status 6

Any other valid number is accepted. Tests script the next answers with ``fail_next`` (an HTTP
status and body, optionally Retry-After) and ``hang_next`` (the message is taken, but the
answer is held back until the client gives up: the lost-acknowledgement case)."""

from __future__ import annotations

import abc
import asyncio
import base64
import binascii
import json
import re
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import format_datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from infrastructure.sandbox.http import Receive, Scope, Send, lifespan, read_body
from infrastructure.sandbox.journal import SandboxJournal
from infrastructure.senders.sms.common import segment_count

JsonObject = dict[str, Any]

SANDBOX_TWILIO_ACCOUNT_SID = "ACdeadbeefdeadbeefdeadbeefdeadbeef"
SANDBOX_TWILIO_AUTH_TOKEN = "sandbox-auth-token"
SANDBOX_VONAGE_API_KEY = "sandboxkey"
SANDBOX_VONAGE_API_SECRET = "sandboxsecret"

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
# Vonage numbers are E.164 digits without the '+'.
_VONAGE_NUMBER = re.compile(r"[1-9][0-9]{6,14}")
# An alphanumeric sender ID: up to 11 letters, digits and spaces, with at least one letter.
_SENDER_ID = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
_MAX_BODY_BYTES = 64 * 1024
_TWILIO_MAX_BODY_CHARS = 1600
_TWILIO_PATH = re.compile(r"/2010-04-01/Accounts/([^/]+)/Messages\.json")


@dataclass(frozen=True, slots=True)
class MagicNumber:
    meaning: str
    twilio_code: int
    twilio_message: str
    vonage_status: str
    vonage_error_text: str


MAGIC_NUMBERS: Mapping[str, MagicNumber] = {
    "+15005550001": MagicNumber(
        "invalid number",
        21211,
        "The 'To' number {to} is not a valid phone number.",
        "3",
        "Invalid To Number",
    ),
    "+15005550002": MagicNumber(
        "cannot be routed",
        21612,
        "The 'To' phone number: {to}, is not currently reachable via SMS.",
        "6",
        "Unroutable message - rejected",
    ),
    "+15005550003": MagicNumber(
        "region not enabled",
        21408,
        "Permission to send an SMS has not been enabled for the region indicated by the "
        "'To' number: {to}.",
        "29",
        "Non White-listed Destination - rejected",
    ),
    "+15005550004": MagicNumber(
        "unsubscribed (STOP)",
        21610,
        "Attempt to send to unsubscribed recipient",
        "7",
        "Illegal Number",
    ),
    "+15005550009": MagicNumber(
        "not a mobile number",
        21614,
        "'To' number {to} is not a valid mobile number",
        "6",
        "Unroutable message - rejected",
    ),
}


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    method: str
    path: str
    headers: Mapping[str, str]
    # The form (or, for Vonage, JSON) fields as sent.
    fields: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: JsonObject
    headers: Mapping[str, str]


class _SmsPeer(abc.ABC):
    """What both peers share: the journal, the scripted answers, de-duplication by reference
    and the ASGI plumbing. Subclasses read a request and answer in their vendor's shape."""

    peer = ""

    def __init__(self, journal_dir: Path | None) -> None:
        self.journal = SandboxJournal(self.peer, journal_dir)
        self.requests: list[ReceivedRequest] = []
        self._forced: deque[Answer] = deque()
        self._holds: deque[float] = deque()
        self._by_reference: dict[str, Answer] = {}

    @property
    def requests_received(self) -> int:
        return len(self.requests)

    def fail_next(
        self,
        status: int,
        body: JsonObject | None = None,
        times: int = 1,
        retry_after: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` requests with ``status``, ``body`` (by default the vendor's
        error body for that status) and ``headers``, taking nothing."""
        headers = dict(headers or {})
        if retry_after is not None:
            headers["retry-after"] = retry_after
        answer = Answer(status, body if body is not None else self._error_body(status), headers)
        self._forced.extend([answer] * times)

    def hang_next(self, seconds: float, times: int = 1) -> None:
        """Take the next ``times`` messages as usual but hold each answer back for ``seconds``,
        or until the client hangs up."""
        self._holds.extend([seconds] * times)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        if body is None:
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request = ReceivedRequest(
            scope["method"], scope["path"], headers, self._fields(headers, body)
        )
        self.requests.append(request)
        if self._forced:
            await _respond(send, self._forced.popleft())
            return
        answer = self._answer(request)
        if self._holds and await _client_left_within(receive, self._holds.popleft()):
            return
        await _respond(send, answer)

    def _fields(self, headers: Mapping[str, str], body: bytes) -> dict[str, str]:
        if len(body) > _MAX_BODY_BYTES:
            return {}
        content_type = headers.get("content-type", "").split(";")[0].strip()
        if content_type == "application/x-www-form-urlencoded":
            return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        return {}

    def _accept(self, reference: str, record: Callable[[], tuple[Answer, JsonObject]]) -> Answer:
        """The answer for a message taken: ``record`` makes it and its journal entry, once per
        reference."""
        if reference and reference in self._by_reference:
            return self._by_reference[reference]
        answer, entry = record()
        self.journal.record(
            {"at": _now().isoformat(), "reference": reference, "peer": self.peer, **entry}
        )
        if reference:
            self._by_reference[reference] = answer
        return answer

    @abc.abstractmethod
    def _answer(self, request: ReceivedRequest) -> Answer:
        """The vendor's answer to one request that passed the scripted failures."""

    @abc.abstractmethod
    def _error_body(self, status: int) -> JsonObject:
        """The vendor's error body for a scripted failure given without one."""


class SandboxTwilio(_SmsPeer):
    """POST /2010-04-01/Accounts/{AccountSid}/Messages.json with HTTP Basic (SID, auth token)
    and form fields To, From, Body. 201 with the Message resource (sid "SM" + 32 hex), or a
    Twilio error {"code", "message", "more_info", "status"}."""

    peer = "twilio"

    def __init__(
        self,
        account_sid: str = SANDBOX_TWILIO_ACCOUNT_SID,
        auth_token: str = SANDBOX_TWILIO_AUTH_TOKEN,
        *,
        journal_dir: Path | None = None,
    ) -> None:
        super().__init__(journal_dir)
        self.account_sid = account_sid
        self.auth_token = auth_token

    def _answer(self, request: ReceivedRequest) -> Answer:
        path = _TWILIO_PATH.fullmatch(request.path)
        if path is None:
            return _twilio_error(404, 20404, f"The requested resource {request.path} was not found")
        if request.method != "POST":
            return _twilio_error(405, 20004, "Method not allowed")
        if _basic_auth(request.headers) != (self.account_sid, self.auth_token) or (
            path[1] != self.account_sid
        ):
            return _twilio_error(401, 20003, "Authenticate")
        fields = request.fields
        to, sender, text = fields.get("To", ""), fields.get("From", ""), fields.get("Body", "")
        if not to:
            return _twilio_error(400, 21604, "A 'To' phone number is required.")
        if not sender:
            return _twilio_error(400, 21603, "A 'From' phone number is required.")
        if not text:
            return _twilio_error(400, 21602, "Message body is required.")
        if not _E164.fullmatch(to):
            return _twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not (_E164.fullmatch(sender) or _SENDER_ID.fullmatch(sender)):
            return _twilio_error(
                400,
                21212,
                f"The 'From' number {sender} is not a valid phone number, shortcode, "
                "or alphanumeric sender ID.",
            )
        if len(text) > _TWILIO_MAX_BODY_CHARS:
            return _twilio_error(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        if (magic := MAGIC_NUMBERS.get(to)) is not None:
            return _twilio_error(400, magic.twilio_code, magic.twilio_message.format(to=to))

        def record() -> tuple[Answer, JsonObject]:
            sid = "SM" + secrets.token_hex(16)
            return (
                Answer(201, self._resource(sid, to, sender, text), {}),
                {"to": to, "from": sender, "body": text, "message_id": sid},
            )

        return self._accept(request.headers.get("i-twilio-idempotency-token", ""), record)

    def _resource(self, sid: str, to: str, sender: str, text: str) -> JsonObject:
        now = format_datetime(_now(), usegmt=True)
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": text,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": str(segment_count(text)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": to,
            "uri": f"{uri}.json",
        }

    def _error_body(self, status: int) -> JsonObject:
        code = {401: 20003, 404: 20404}.get(status, 20000 + status)
        return _twilio_error(status, code, _reason(status)).body


class SandboxVonage(_SmsPeer):
    """POST /sms/json with api_key, api_secret, from, to (digits, no '+'), text, optional type
    and client-ref, form-encoded or JSON. Always HTTP 200 with {"message-count", "messages"}:
    one entry per SMS part, "status" "0" when taken, else a status and "error-text"."""

    peer = "vonage"

    def __init__(
        self,
        api_key: str = SANDBOX_VONAGE_API_KEY,
        api_secret: str = SANDBOX_VONAGE_API_SECRET,
        *,
        journal_dir: Path | None = None,
    ) -> None:
        super().__init__(journal_dir)
        self.api_key = api_key
        self.api_secret = api_secret
        self._balance = Decimal("10.00000000")

    def _fields(self, headers: Mapping[str, str], body: bytes) -> dict[str, str]:
        if headers.get("content-type", "").split(";")[0].strip() == "application/json":
            try:
                parsed = json.loads(body)
            except ValueError:
                return {}
            if isinstance(parsed, dict):
                return {str(k): str(v) for k, v in parsed.items()}
            return {}
        return super()._fields(headers, body)

    def _answer(self, request: ReceivedRequest) -> Answer:
        if request.path != "/sms/json":
            return Answer(404, self._error_body(404), {})
        if request.method != "POST":
            return Answer(405, self._error_body(405), {})
        fields = request.fields
        for name in ("api_key", "api_secret"):
            if not fields.get(name):
                return vonage_refusal("2", f"Missing {name}")
        if (fields["api_key"], fields["api_secret"]) != (self.api_key, self.api_secret):
            return vonage_refusal("4", "Bad Credentials")
        for name in ("from", "to", "text"):
            if not fields.get(name):
                return vonage_refusal("2", f"Missing {name} param")
        to, sender, text = fields["to"], fields["from"], fields["text"]
        if not _VONAGE_NUMBER.fullmatch(to):
            return vonage_refusal("3", "Invalid to address", to=to)
        if not (_VONAGE_NUMBER.fullmatch(sender) or _SENDER_ID.fullmatch(sender)):
            return vonage_refusal("15", "Illegal Sender Address - rejected", to=to)
        if fields.get("type", "text") not in ("text", "unicode"):
            return vonage_refusal("3", "Invalid type", to=to)
        if (magic := MAGIC_NUMBERS.get(f"+{to}")) is not None:
            return vonage_refusal(magic.vonage_status, magic.vonage_error_text, to=to)
        reference = fields.get("client-ref", "")

        def record() -> tuple[Answer, JsonObject]:
            parts = [self._part(to, reference) for _ in range(segment_count(text))]
            answer = Answer(200, {"message-count": str(len(parts)), "messages": parts}, {})
            entry = {"to": f"+{to}", "from": sender, "body": text}
            return answer, {**entry, "message_id": parts[0]["message-id"]}

        return self._accept(reference, record)

    def _part(self, to: str, reference: str) -> JsonObject:
        price = Decimal("0.03330000")
        self._balance -= price
        part: JsonObject = {
            "to": to,
            "message-id": secrets.token_hex(8).upper(),
            "status": "0",
            "remaining-balance": str(self._balance),
            "message-price": str(price),
            "network": "23410",
        }
        if reference:
            part["client-ref"] = reference
        return part

    def _error_body(self, status: int) -> JsonObject:
        # What the API gateway answers itself, before the SMS API sees the request.
        title = _reason(status)
        return {
            "type": f"https://developer.vonage.com/api-errors#{title.lower().replace(' ', '-')}",
            "title": title,
        }


def vonage_refusal(status: str, error_text: str, *, to: str = "") -> Answer:
    """A Vonage SMS API refusal: HTTP 200 carrying a non-zero message status."""
    return Answer(200, vonage_error_body(status, error_text, to=to), {})


def vonage_error_body(status: str, error_text: str, *, to: str = "") -> JsonObject:
    """The body of a refusal with ``status``, e.g. for ``SandboxVonage.fail_next(200, ...)``."""
    message: JsonObject = {"status": status, "error-text": error_text}
    if to:
        message = {"to": to, **message}
    return {"message-count": "1", "messages": [message]}


def _twilio_error(status: int, code: int, message: str) -> Answer:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return Answer(status, body, {})


def _basic_auth(headers: Mapping[str, str]) -> tuple[str, str] | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(token, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _now() -> datetime:
    return datetime.now(UTC)


async def _client_left_within(receive: Receive, seconds: float) -> bool:
    """Wait up to ``seconds``; True as soon as the client disconnects."""
    try:
        async with asyncio.timeout(seconds):
            while (await receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        return False
    return True


async def _respond(send: Send, answer: Answer) -> None:
    body = json.dumps(answer.body).encode()
    headers = [
        (b"content-type", b"application/json; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items()),
    ]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
