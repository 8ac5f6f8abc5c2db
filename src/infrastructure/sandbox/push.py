"""Sandbox push services: an FCM HTTP v1 peer with Google's OAuth token endpoint, and an APNs
peer that speaks HTTP/2 over TLS. Both check credentials and message shape as the real
services do, answer in their error shapes, and journal what they accepted.

Magic device tokens, for trying failures by hand in dev mode:
  FCM:  "unregistered..." -> 404 UNREGISTERED; "mismatch..." -> 403 SENDER_ID_MISMATCH;
        "invalid..." -> 400 INVALID_ARGUMENT (bad registration token).
  APNs: "unregistered..." -> 410 Unregistered; "notfortopic..." -> 400 DeviceTokenNotForTopic.
        Any other token that is not hex -> 400 BadDeviceToken, as with Apple.
Everything else valid is accepted.

Tests script failures with ``fail_next`` (an answer in the vendor's shape, optionally several
times), ``hang_next`` (accept, then answer only after a delay: the client times out with the
message already taken) and ``expire_tokens`` (credentials in use so far stop working)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from infrastructure.sandbox.http import (
    Receive,
    RunningPeer,
    SandboxTls,
    Scope,
    Send,
    lifespan,
    read_body,
    serve_asgi,
)
from infrastructure.sandbox.journal import SandboxJournal

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
SANDBOX_APNS_KEY_ID = "SANDBOXK01"
SANDBOX_APNS_TEAM_ID = "SANDBOXT01"
SANDBOX_APNS_TOPIC = "dev.notifyd.sandbox"
SANDBOX_FCM_PROJECT = "notifyd-sandbox"

_MAX_BODY_BYTES = 64 * 1024
# FCM and APNs both cap a message's payload at 4 KB.
_MAX_PAYLOAD_BYTES = 4096
_CLOCK_LEEWAY_SECONDS = 60


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


# -- ASGI plumbing ----------------------------------------------------------------------------


@dataclass
class _Answer:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json; charset=UTF-8"


async def _respond(send: Send, answer: _Answer) -> None:
    headers = [(b"content-type", answer.content_type.encode())] if answer.body else []
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers]
    headers.append((b"content-length", str(len(answer.body)).encode()))
    # The client may have given up (a scripted hang outlived its timeout); nobody listens then.
    with contextlib.suppress(Exception):
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})


def _headers(scope: Scope) -> dict[str, str]:
    """Request headers by lower-case name; a repeated header keeps its last value."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _bearer(headers: dict[str, str]) -> str:
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


# -- scripted behaviour -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Forced:
    status: int
    body: bytes
    retry_after: str | None


class _Script:
    """Forced answers and hangs, each used by one request, in the order queued."""

    def __init__(self) -> None:
        self._failures: deque[_Forced] = deque()
        self._hangs: deque[float] = deque()
        self._release = asyncio.Event()

    def fail(self, forced: _Forced, times: int) -> None:
        self._failures.extend([forced] * times)

    def hang(self, seconds: float, times: int) -> None:
        self._hangs.extend([seconds] * times)

    def next_failure(self) -> _Forced | None:
        return self._failures.popleft() if self._failures else None

    async def maybe_hang(self) -> None:
        if not self._hangs:
            return
        seconds = self._hangs.popleft()
        release = self._release
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), seconds)

    def release(self) -> None:
        """End the hangs in progress (a test finishing need not wait them out)."""
        self._release.set()
        self._release = asyncio.Event()

    def forced_answer(self, forced: _Forced) -> _Answer:
        headers = [("retry-after", forced.retry_after)] if forced.retry_after is not None else []
        return _Answer(forced.status, forced.body, headers)


def _forced_body(body: Any, default: Any) -> bytes:
    chosen = default if body is None else body
    if isinstance(chosen, bytes):
        return chosen
    if isinstance(chosen, str):
        return chosen.encode("utf-8")
    return _json(chosen)


# -- credentials for dev and tests ------------------------------------------------------------


def write_fcm_service_account(
    directory: Path, project_id: str, token_uri: str, *, client_email: str = ""
) -> Path:
    """A service-account key file, shaped like Google's, with a fresh RSA key."""
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    email = client_email or f"notifyd-sandbox@{project_id}.iam.gserviceaccount.com"
    info = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": email,
        "client_id": str(secrets.randbelow(10**21)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "universe_domain": "googleapis.com",
    }
    path = directory / f"fcm-{project_id}-{info['private_key_id'][:8]}.json"
    path.write_text(json.dumps(info, indent=2), encoding="utf-8")
    path.chmod(0o600)
    return path


def write_apns_key(directory: Path, key_id: str = SANDBOX_APNS_KEY_ID) -> Path:
    """An APNs auth key file (AuthKey_<KEYID>.p8: a P-256 key, PEM, PKCS#8), freshly made."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    path = directory / f"AuthKey_{key_id}.p8"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


# -- FCM --------------------------------------------------------------------------------------

_FCM_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
# The FcmError code FCM puts in the details for each status, where it gives one.
_FCM_ERROR_CODES = {
    400: "INVALID_ARGUMENT",
    403: "SENDER_ID_MISMATCH",
    404: "UNREGISTERED",
    429: "QUOTA_EXCEEDED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_FCM_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential.",
    403: "SenderId mismatch",
    404: "Requested entity was not found.",
    429: "Quota exceeded for quota metric 'Send requests'.",
    500: "Internal error encountered.",
    503: "The service is currently unavailable.",
}
_MESSAGE_KEYS = frozenset(
    {
        "name",
        "data",
        "notification",
        "android",
        "webpush",
        "apns",
        "fcm_options",
        "token",
        "topic",
        "condition",
    }
)
_NOTIFICATION_KEYS = frozenset({"title", "body", "image"})
_RESERVED_DATA_KEYS = frozenset({"from", "notification", "message_type"})
_TTL = re.compile(r"^\d+(\.\d{1,9})?s$")
_SEND_PATH = re.compile(r"^/v1/projects/([^/]+)/messages:send$")


def fcm_error_body(
    status: int, error_code: str | None = None, message: str | None = None
) -> dict[str, Any]:
    """A Google RPC error as FCM sends it; ``error_code`` "" leaves out the FcmError detail."""
    code = _FCM_ERROR_CODES.get(status, "") if error_code is None else error_code
    error: dict[str, Any] = {
        "code": status,
        "message": message if message is not None else _FCM_MESSAGES.get(status, "Error"),
        "status": _FCM_STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if code:
        error["details"] = [{"@type": FCM_ERROR_TYPE, "errorCode": code}]
    return {"error": error}


def _fcm_error(status: int, error_code: str | None = None, message: str | None = None) -> _Answer:
    return _Answer(status, _json(fcm_error_body(status, error_code, message)))


def _invalid(message: str, field_path: str = "") -> _Answer:
    body = fcm_error_body(400, "INVALID_ARGUMENT", message)
    if field_path:
        body["error"]["details"].append(
            {
                "@type": BAD_REQUEST_TYPE,
                "fieldViolations": [{"field": field_path, "description": message}],
            }
        )
    return _Answer(400, _json(body))


def _oauth_error(error: str, description: str) -> _Answer:
    return _Answer(400, _json({"error": error, "error_description": description}))


@dataclass(frozen=True, slots=True)
class _ServiceAccount:
    project_id: str
    client_email: str
    private_key_id: str
    public_key: RSAPublicKey
    token_uri: str


@dataclass(slots=True)
class _AccessToken:
    client_email: str
    project_id: str
    # On the monotonic clock.
    expires_at: float
    revoked: bool = False


class SandboxFcm:
    """An ASGI app: ``POST /token`` (Google's OAuth 2 JWT bearer grant) and
    ``POST /v1/projects/{project}/messages:send``, for the service accounts it trusts."""

    peer = "fcm"

    def __init__(
        self,
        *,
        journal: SandboxJournal | None = None,
        service_accounts: Iterable[Path] = (),
        token_lifetime_seconds: int = 3600,
    ) -> None:
        self.journal = journal if journal is not None else SandboxJournal(self.peer)
        self._accounts: dict[str, _ServiceAccount] = {}
        self._issued: dict[str, _AccessToken] = {}
        self._lifetime = token_lifetime_seconds
        self._send_script = _Script()
        self._token_script = _Script()
        # Counters and what each send request carried, for tests.
        self.tokens_minted = 0
        self.token_requests = 0
        self.requests = 0
        self.seen: list[dict[str, Any]] = []
        for path in service_accounts:
            self.trust_service_account(path)

    # -- set-up and scripting -----------------------------------------------------------------

    def trust_service_account(self, path: Path) -> None:
        info = json.loads(path.read_text(encoding="utf-8"))
        key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{path}: not an RSA service account key")
        self._accounts[info["client_email"]] = _ServiceAccount(
            project_id=info["project_id"],
            client_email=info["client_email"],
            private_key_id=info["private_key_id"],
            public_key=key.public_key(),
            token_uri=info.get("token_uri", ""),
        )

    def fail_next(
        self,
        status: int,
        body: Any = None,
        *,
        times: int = 1,
        retry_after: int | str | None = None,
        endpoint: str = "send",
    ) -> None:
        """The next ``times`` requests to ``endpoint`` ("send" or "token") get ``status`` and
        ``body`` (default: FCM's error for that status, or an OAuth error for "token")."""
        if endpoint == "token":
            default: Any = {"error": "internal_failure", "error_description": "Sandbox failure"}
            script = self._token_script
        else:
            default = fcm_error_body(status)
            script = self._send_script
        forced = _Forced(
            status,
            _forced_body(body, default),
            str(retry_after) if retry_after is not None else None,
        )
        script.fail(forced, times)

    def hang_next(self, seconds: float, *, times: int = 1) -> None:
        """The next ``times`` sends are handled (and journalled when valid), then answered
        only after ``seconds``."""
        self._send_script.hang(seconds, times)

    def expire_tokens(self) -> None:
        """Every access token issued so far stops working: the next send with one gets 401."""
        for issued in self._issued.values():
            issued.revoked = True

    def release(self) -> None:
        self._send_script.release()

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await read_body(receive, _MAX_BODY_BYTES)
        if body is None:
            await _respond(send, _fcm_error(400, "", "Request payload too large."))
            return
        path = scope["path"]
        if path == "/token":
            await _respond(send, self._token(scope, body))
            return
        match = _SEND_PATH.fullmatch(path)
        if match is None or scope["method"] != "POST":
            await _respond(send, _fcm_error(404, "", f"Not found: {scope['method']} {path}"))
            return
        self.requests += 1
        forced = self._send_script.next_failure()
        answer = (
            self._send_script.forced_answer(forced)
            if forced is not None
            else self._send(scope, match.group(1), body)
        )
        await self._send_script.maybe_hang()
        await _respond(send, answer)

    # -- the OAuth token endpoint -------------------------------------------------------------

    def _token(self, scope: Scope, body: bytes) -> _Answer:
        self.token_requests += 1
        if scope["method"] != "POST":
            return _Answer(405, _json({"error": "invalid_request"}))
        forced = self._token_script.next_failure()
        if forced is not None:
            return self._token_script.forced_answer(forced)
        form = parse_qs(body.decode("utf-8", "replace"))
        grant = form.get("grant_type", [""])[0]
        if grant != JWT_BEARER_GRANT:
            return _oauth_error("unsupported_grant_type", f"Invalid grant_type: {grant}")
        assertion = form.get("assertion", [""])[0]
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return _oauth_error("invalid_grant", "Invalid JWT: not a JWT.")
        account = self._accounts.get(str(unverified.get("iss", "")))
        if account is None:
            return _oauth_error("invalid_grant", "Invalid grant: account not found")
        if header.get("alg") != "RS256" or header.get("kid") != account.private_key_id:
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        headers = _headers(scope)
        here = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}{scope['path']}"
        audiences = [a for a in (account.token_uri, here) if a]
        try:
            claims = jwt.decode(
                assertion,
                account.public_key,
                algorithms=["RS256"],
                audience=audiences,
                leeway=_CLOCK_LEEWAY_SECONDS,
                options={"require": ["iss", "aud", "iat", "exp"]},
            )
        except jwt.InvalidSignatureError:
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        except jwt.InvalidAudienceError:
            return _oauth_error("invalid_grant", "Invalid JWT: Failed audience check.")
        except jwt.ExpiredSignatureError:
            return _oauth_error(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe.",
            )
        except jwt.InvalidTokenError as exc:
            return _oauth_error("invalid_grant", f"Invalid JWT: {exc}")
        if int(claims["exp"]) - int(claims["iat"]) > 3600:
            return _oauth_error(
                "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes)."
            )
        if FCM_SCOPE not in str(claims.get("scope", "")).split():
            return _oauth_error("invalid_scope", f"The scope {FCM_SCOPE} was not requested.")
        value = f"ya29.sandbox-{secrets.token_urlsafe(32)}"
        self._issued[value] = _AccessToken(
            account.client_email, account.project_id, time.monotonic() + self._lifetime
        )
        self.tokens_minted += 1
        return _Answer(
            200,
            _json({"access_token": value, "expires_in": self._lifetime, "token_type": "Bearer"}),
        )

    # -- messages:send ------------------------------------------------------------------------

    def _send(self, scope: Scope, project_id: str, body: bytes) -> _Answer:
        headers = _headers(scope)
        record: dict[str, Any] = {"headers": headers, "project_id": project_id}
        self.seen.append(record)
        issued = self._issued.get(_bearer(headers))
        if issued is None or issued.revoked or time.monotonic() >= issued.expires_at:
            return _fcm_error(401)
        if issued.project_id != project_id:
            return _fcm_error(
                403,
                "",
                f"Permission 'cloudmessaging.messages.create' denied on resource "
                f"'//cloudresourcemanager.googleapis.com/projects/{project_id}' "
                f"(or it may not exist).",
            )
        try:
            payload = json.loads(body)
        except ValueError:
            return _invalid("Invalid JSON payload received.")
        record["body"] = payload
        message = payload.get("message") if isinstance(payload, dict) else None
        if not isinstance(message, dict) or set(payload) != {"message"}:
            return _invalid('Invalid JSON payload received. Expected {"message": {...}}.')
        problem = _check_message(message)
        if problem is not None:
            return problem
        token = str(message.get("token", ""))
        if token.startswith("unregistered"):
            return _fcm_error(404)
        if token.startswith("mismatch"):
            return _fcm_error(403)
        if token.startswith("invalid"):
            return _invalid(
                "The registration token is not a valid FCM registration token", "message.token"
            )
        name = f"projects/{project_id}/messages/0:{time.time_ns() // 1000}%{secrets.token_hex(8)}"
        shown = message.get("notification", {})
        self.journal.record(
            {
                "at": _now_iso(),
                "token": token,
                "title": shown.get("title", ""),
                "body": shown.get("body", ""),
                "data": message.get("data", {}),
                "message_id": name,
                "peer": self.peer,
            }
        )
        return _Answer(200, _json({"name": name}))


def _check_message(message: dict[str, Any]) -> _Answer | None:
    """What FCM would refuse in a message, as it would say it; None when it is valid."""
    unknown = sorted(set(message) - _MESSAGE_KEYS)
    if unknown:
        return _invalid(
            f"Invalid JSON payload received. Unknown name \"{unknown[0]}\" at 'message': "
            f"Cannot find field.",
            f"message.{unknown[0]}",
        )
    targets = [k for k in ("token", "topic", "condition") if k in message]
    if len(targets) != 1:
        return _invalid("Exactly one of token, topic or condition is required.", "message")
    if "token" in message and (
        not isinstance(message["token"], str) or not message["token"].strip()
    ):
        return _invalid(
            "The registration token is not a valid FCM registration token", "message.token"
        )
    shown = message.get("notification", {})
    if not isinstance(shown, dict) or set(shown) - _NOTIFICATION_KEYS:
        return _invalid("Invalid notification payload.", "message.notification")
    if any(not isinstance(v, str) for v in shown.values()):
        return _invalid("Notification fields are strings.", "message.notification")
    data = message.get("data", {})
    if not isinstance(data, dict):
        return _invalid("Invalid data payload.", "message.data")
    for i, (key, value) in enumerate(data.items()):
        if not isinstance(value, str):
            return _invalid(
                f"Invalid value at 'message.data[{i}].value' (TYPE_STRING), {json.dumps(value)}",
                f"message.data[{i}].value",
            )
        if key in _RESERVED_DATA_KEYS or key.startswith(("google", "gcm")):
            return _invalid(f"Invalid data payload key: {key}", f"message.data[{i}].key")
    size = len(_json(shown)) + len(_json(data))
    if size > _MAX_PAYLOAD_BYTES:
        return _invalid("Android message is too big", "message")
    android = message.get("android", {})
    if not isinstance(android, dict):
        return _invalid("Invalid android config.", "message.android")
    if android.get("priority", "NORMAL") not in ("NORMAL", "HIGH"):
        return _invalid(
            f"Invalid value at 'message.android.priority' ({android.get('priority')})",
            "message.android.priority",
        )
    if "ttl" in android and not _TTL.fullmatch(str(android["ttl"])):
        return _invalid("Invalid value at 'message.android.ttl' (Duration)", "message.android.ttl")
    apns = message.get("apns", {})
    if not isinstance(apns, dict) or not isinstance(apns.get("headers", {}), dict):
        return _invalid("Invalid apns config.", "message.apns")
    return None


# -- APNs -------------------------------------------------------------------------------------

_PUSH_TYPES = frozenset(
    {
        "alert",
        "background",
        "location",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "liveactivity",
        "pushtotalk",
    }
)
_APNS_REASONS = {
    400: "BadDeviceToken",
    403: "InvalidProviderToken",
    404: "BadPath",
    405: "MethodNotAllowed",
    410: "Unregistered",
    413: "PayloadTooLarge",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}
_DEVICE_PATH = re.compile(r"^/3/device/([^/]+)$")
_HEX_TOKEN = re.compile(r"^(?:[0-9A-Fa-f]{2}){8,}$")
_CANONICAL_UUID = re.compile(
    r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
)


def apns_error_body(status: int, reason: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"reason": reason or _APNS_REASONS.get(status, "BadRequest")}
    if status == 410:
        # When APNs last learnt the token was invalid, in milliseconds.
        body["timestamp"] = int(time.time() * 1000)
    return body


def _apns_error(status: int, reason: str, apns_id: str = "") -> _Answer:
    headers = [("apns-id", apns_id)] if apns_id else []
    return _Answer(status, _json(apns_error_body(status, reason)), headers)


@dataclass(frozen=True, slots=True)
class _AuthKey:
    team_id: str
    public_key: EllipticCurvePublicKey


class SandboxApns:
    """An ASGI app for ``POST /3/device/{token}``. Serve it with ``serve_asgi(app,
    tls=SandboxTls...)``: like APNs it takes HTTP/2 only (anything else gets 505
    HTTPVersionNotSupported, in APNs' error shape, so a client not speaking HTTP/2 is found
    out at once). It verifies the ES256 provider token against the keys it trusts and drops a
    repeated apns-id (answering as the first time)."""

    peer = "apns"

    def __init__(
        self,
        *,
        journal: SandboxJournal | None = None,
        topics: Iterable[str] | None = None,
        token_max_age_seconds: int = 3600,
    ) -> None:
        self.journal = journal if journal is not None else SandboxJournal(self.peer)
        # None: any non-empty topic is this team's.
        self._topics = frozenset(topics) if topics is not None else None
        self._keys: dict[str, _AuthKey] = {}
        self._max_age = token_max_age_seconds
        self._script = _Script()
        self._provider_tokens: set[str] = set()
        self._expired: set[str] = set()
        # apns-id -> the apns-unique-id given when it was first accepted.
        self._accepted: dict[str, str] = {}
        self.requests = 0
        self.duplicates = 0
        self.seen: list[dict[str, Any]] = []

    @property
    def provider_tokens_seen(self) -> int:
        """Distinct valid provider tokens (JWTs) received: how often the client minted one."""
        return len(self._provider_tokens)

    def trust_key(self, key_file: Path, *, key_id: str, team_id: str) -> None:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_file}: not an EC key")
        self._keys[key_id] = _AuthKey(team_id, key.public_key())

    def fail_next(
        self,
        status: int,
        body: Any = None,
        *,
        times: int = 1,
        retry_after: int | str | None = None,
    ) -> None:
        """The next ``times`` requests get ``status`` and ``body`` (default: APNs' usual
        reason for that status, e.g. {"reason": "TooManyRequests"} for 429)."""
        forced = _Forced(
            status,
            _forced_body(body, apns_error_body(status)),
            str(retry_after) if retry_after is not None else None,
        )
        self._script.fail(forced, times)

    def hang_next(self, seconds: float, *, times: int = 1) -> None:
        self._script.hang(seconds, times)

    def expire_tokens(self) -> None:
        """Every provider token seen so far is expired: the next request with one gets 403
        ExpiredProviderToken."""
        self._expired |= self._provider_tokens

    def release(self) -> None:
        self._script.release()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await read_body(receive, _MAX_BODY_BYTES)
        if body is None:
            await _respond(send, _apns_error(413, "PayloadTooLarge"))
            return
        self.requests += 1
        headers = _headers(scope)
        record: dict[str, Any] = {
            "http_version": scope.get("http_version", ""),
            "method": scope["method"],
            "path": scope["path"],
            "headers": headers,
            "body": body,
        }
        self.seen.append(record)
        if scope.get("http_version") != "2":
            answer = _apns_error(505, "HTTPVersionNotSupported")
        else:
            forced = self._script.next_failure()
            if forced is not None:
                answer = self._script.forced_answer(forced)
            else:
                answer = self._push(scope, headers, body, record)
        record["status"] = answer.status
        await self._script.maybe_hang()
        await _respond(send, answer)

    def _push(
        self, scope: Scope, headers: dict[str, str], body: bytes, record: dict[str, Any]
    ) -> _Answer:
        apns_id = headers.get("apns-id", "")
        if scope["method"] != "POST":
            return _apns_error(405, "MethodNotAllowed", apns_id)
        match = _DEVICE_PATH.fullmatch(scope["path"])
        if match is None:
            return _apns_error(404, "BadPath", apns_id)
        device = match.group(1)
        problem = self._check_provider_token(headers, record)
        if problem is not None:
            return _apns_error(403, problem, apns_id)
        if apns_id and not _CANONICAL_UUID.fullmatch(apns_id):
            return _apns_error(400, "BadMessageId")
        topic = headers.get("apns-topic", "")
        if not topic:
            return _apns_error(400, "MissingTopic", apns_id)
        if self._topics is not None and topic not in self._topics:
            return _apns_error(400, "TopicDisallowed", apns_id)
        push_type = headers.get("apns-push-type", "")
        if push_type not in _PUSH_TYPES:
            return _apns_error(400, "InvalidPushType", apns_id)
        priority = headers.get("apns-priority", "10")
        if priority not in ("1", "5", "10") or (push_type == "background" and priority == "10"):
            return _apns_error(400, "BadPriority", apns_id)
        expiration = headers.get("apns-expiration")
        if expiration is not None and not expiration.isdigit():
            return _apns_error(400, "BadExpirationDate", apns_id)
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            return _apns_error(400, "BadCollapseId", apns_id)
        if len(body) > _MAX_PAYLOAD_BYTES:
            return _apns_error(413, "PayloadTooLarge", apns_id)
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            return _apns_error(400, "PayloadEmpty", apns_id)
        if device.startswith("unregistered"):
            return _apns_error(410, "Unregistered", apns_id)
        if device.startswith("notfortopic"):
            return _apns_error(400, "DeviceTokenNotForTopic", apns_id)
        if not _HEX_TOKEN.fullmatch(device):
            return _apns_error(400, "BadDeviceToken", apns_id)

        if apns_id and apns_id.lower() in self._accepted:
            self.duplicates += 1
            unique = self._accepted[apns_id.lower()]
            return _Answer(200, headers=[("apns-id", apns_id), ("apns-unique-id", unique)])
        apns_id = apns_id or str(uuid.uuid4()).upper()
        unique = str(uuid.uuid4())
        self._accepted[apns_id.lower()] = unique
        alert = payload["aps"].get("alert", {})
        if isinstance(alert, str):
            alert = {"body": alert}
        self.journal.record(
            {
                "at": _now_iso(),
                "token": device,
                "topic": topic,
                "push_type": push_type,
                "priority": priority,
                "apns_id": apns_id,
                "title": alert.get("title", "") if isinstance(alert, dict) else "",
                "body": alert.get("body", "") if isinstance(alert, dict) else "",
                "data": {k: v for k, v in payload.items() if k != "aps"},
                "peer": self.peer,
            }
        )
        return _Answer(200, headers=[("apns-id", apns_id), ("apns-unique-id", unique)])

    def _check_provider_token(self, headers: dict[str, str], record: dict[str, Any]) -> str | None:
        """The 403 reason the provider token earns; None when it is good."""
        token = _bearer(headers)
        if not token:
            return "MissingProviderToken"
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            return "InvalidProviderToken"
        record["jwt_header"] = header
        key = self._keys.get(str(header.get("kid", "")))
        if header.get("alg") != "ES256" or key is None:
            return "InvalidProviderToken"
        try:
            claims = jwt.decode(
                token,
                key.public_key,
                algorithms=["ES256"],
                leeway=_CLOCK_LEEWAY_SECONDS,
                options={"require": ["iss", "iat"]},
            )
        except jwt.InvalidTokenError:
            return "InvalidProviderToken"
        record["jwt_claims"] = claims
        if claims.get("iss") != key.team_id:
            return "InvalidProviderToken"
        if token in self._expired or time.time() - int(claims["iat"]) > self._max_age:
            return "ExpiredProviderToken"
        self._provider_tokens.add(token)
        return None


# -- dev mode ---------------------------------------------------------------------------------


@dataclass
class PushSandboxes:
    """Both push peers running, with credentials made for them: what `notifyd dev` starts.
    ``settings()`` gives the NOTIFYD_* values that point the providers at them."""

    fcm: SandboxFcm
    fcm_peer: RunningPeer
    fcm_credentials_file: Path
    apns: SandboxApns
    apns_peer: RunningPeer
    apns_key_file: Path
    tls: SandboxTls
    apns_key_id: str = SANDBOX_APNS_KEY_ID
    apns_team_id: str = SANDBOX_APNS_TEAM_ID
    apns_topic: str = SANDBOX_APNS_TOPIC

    @classmethod
    async def start(
        cls,
        directory: Path,
        *,
        journal_dir: Path | None = None,
        tls: SandboxTls | None = None,
        project_id: str = SANDBOX_FCM_PROJECT,
        topic: str = SANDBOX_APNS_TOPIC,
    ) -> PushSandboxes:
        """``tls`` lets several HTTPS peers share one CA (the providers trust one CA file)."""
        tls = tls if tls is not None else SandboxTls.create(directory / "tls")
        fcm = SandboxFcm(journal=SandboxJournal("fcm", journal_dir))
        fcm_peer = await serve_asgi(fcm)
        credentials = write_fcm_service_account(directory, project_id, f"{fcm_peer.base_url}/token")
        fcm.trust_service_account(credentials)
        apns = SandboxApns(journal=SandboxJournal("apns", journal_dir), topics=[topic])
        key_file = write_apns_key(directory)
        apns.trust_key(key_file, key_id=SANDBOX_APNS_KEY_ID, team_id=SANDBOX_APNS_TEAM_ID)
        apns_peer = await serve_asgi(apns, tls=tls)
        return cls(
            fcm=fcm,
            fcm_peer=fcm_peer,
            fcm_credentials_file=credentials,
            apns=apns,
            apns_peer=apns_peer,
            apns_key_file=key_file,
            tls=tls,
            apns_topic=topic,
        )

    def settings(self) -> dict[str, str]:
        return {
            "fcm_base_url": self.fcm_peer.base_url,
            "fcm_credentials_file": str(self.fcm_credentials_file),
            "fcm_token_url": f"{self.fcm_peer.base_url}/token",
            "apns_base_url": self.apns_peer.base_url,
            "apns_key_file": str(self.apns_key_file),
            "apns_key_id": self.apns_key_id,
            "apns_team_id": self.apns_team_id,
            "apns_topic": self.apns_topic,
            "provider_ca_file": str(self.tls.ca_file),
        }

    async def close(self) -> None:
        self.fcm.release()
        self.apns.release()
        await self.fcm_peer.close()
        await self.apns_peer.close()
