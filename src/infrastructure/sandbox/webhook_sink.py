"""A webhook receiver that checks Standard Webhooks signatures: the WEBHOOK channel's sandbox.

It takes a POST on any path and answers 200 with a ``webhook-message-id``. Given the secrets a
path should be signed with, it says in its journal whether one of the signatures checks out
(``verified``: True/False; None when it was told no secret). With ``reject_unverified`` it
answers 401 to a signature that does not, as a careful receiver does.

Magic paths for trying failures from dev mode: ``/gone`` answers 410 Gone (notifyd then
disables the recipient's endpoint) and ``/fail`` answers 503 (retried with backoff).
Tests script answers with ``fail_next`` and ``hang_next``.

A receiver de-duplicates on ``webhook-id``: a repeat of a message it took is answered 200 with
the first message id and journaled with ``"duplicate": true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infrastructure.sandbox.http import Receive, Scope, Send, lifespan
from infrastructure.sandbox.journal import SandboxJournal
from infrastructure.senders.standard_webhooks import webhook_signature

PEER = "webhook"
GONE_PATH = "/gone"
FAIL_PATH = "/fail"
# As the reference libraries: a timestamp further than this from now does not verify, which
# stops a captured request from being replayed later.
TIMESTAMP_TOLERANCE_SECONDS = 5 * 60
MAX_BODY_BYTES = 1 << 20
_REASONS = {
    400: "bad request",
    401: "signature does not verify",
    405: "method not allowed",
    410: "gone",
    413: "payload too large",
    429: "too many requests",
    500: "internal error",
    502: "bad gateway",
    503: "unavailable",
}


@dataclass(frozen=True, slots=True)
class ReceivedWebhook:
    """A request exactly as it arrived, for checks the journal's parsed entry cannot serve
    (such as verifying the signature with another library)."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class _Forced:
    status: int = 200
    body: str = ""
    retry_after: int | None = None
    # Seconds to wait before answering at all (past the sender's timeout, typically).
    hang: float = 0.0


class SandboxWebhookSink:
    def __init__(
        self,
        secrets: Sequence[str] = (),
        *,
        secrets_by_path: Mapping[str, Sequence[str]] | None = None,
        reject_unverified: bool = False,
        journal: SandboxJournal | None = None,
        journal_dir: Path | None = None,
    ) -> None:
        self._secrets = tuple(secrets)
        self._by_path = {path: tuple(s) for path, s in (secrets_by_path or {}).items()}
        self._reject_unverified = reject_unverified
        self.journal = journal or SandboxJournal(PEER, journal_dir)
        self.received: list[ReceivedWebhook] = []
        self._forced: deque[_Forced] = deque()
        self._taken: dict[str, str] = {}
        self._count = 0
        # Hanging requests wait on it; release() sets it (and puts a fresh one in its place).
        self._released = asyncio.Event()

    @property
    def entries(self) -> list[dict[str, Any]]:
        return self.journal.entries

    def expect(self, secrets: Iterable[str], path: str | None = None) -> None:
        """Check signatures against ``secrets`` from now on: on ``path`` only, or wherever no
        path-specific secrets are set (``path`` None)."""
        if path is None:
            self._secrets = tuple(secrets)
        else:
            self._by_path[path] = tuple(secrets)

    def fail_next(
        self, status: int, times: int = 1, *, body: str = "", retry_after: int | None = None
    ) -> None:
        """Answer the next ``times`` requests with ``status`` (and ``Retry-After``)."""
        self._forced.extend([_Forced(status, body, retry_after)] * times)

    def hang_next(self, times: int = 1, *, seconds: float = 30.0) -> None:
        """Read the next ``times`` requests, then say nothing for ``seconds`` before answering
        200: the sender's deadline passes with the request delivered but unanswered."""
        self._forced.extend([_Forced(hang=seconds)] * times)

    def release(self) -> None:
        """End every request hanging now (they are answered 200); later hangs still hang."""
        self._released.set()
        self._released = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = str(scope.get("path") or "/")
        if scope["method"] != "POST":
            await _answer(send, 405, [("allow", "POST")])
            return
        body = await _read_body(receive)
        if body is None:
            await _answer(send, 413)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        await self._take(path, headers, body, send)

    async def _take(self, path: str, headers: dict[str, str], body: bytes, send: Send) -> None:
        self.received.append(ReceivedWebhook(path, headers, body))
        webhook_id = headers.get("webhook-id", "")
        try:
            payload: Any = json.loads(body)
        except ValueError:
            payload = None
        verified = self._verified(path, headers, body)
        entry: dict[str, Any] = {
            "peer": PEER,
            "at": datetime.now(UTC).isoformat(),
            "path": path,
            "webhook_id": webhook_id,
            "verified": verified,
            "signatures": len(headers.get("webhook-signature", "").split()),
            "body": payload if payload is not None else body.decode("utf-8", "replace"),
        }
        forced = self._forced.popleft() if self._forced else None
        if forced is not None and forced.hang:
            # Taken, then the answer is late: the sender gives up, and its retry is a duplicate.
            message_id = self._message_id(webhook_id)
            self._record(entry, status=0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), forced.hang)
            await _answer(send, 200, [("webhook-message-id", message_id)])
            return
        status, extra = self._status_for(path, forced, payload, verified, headers)
        if status == 200 and webhook_id in self._taken:
            entry["duplicate"] = True
        self._record(entry, status=status)
        if status == 200:
            extra.append(("webhook-message-id", self._message_id(webhook_id)))
        await _answer(send, status, extra, forced.body if forced else "")

    def _status_for(
        self,
        path: str,
        forced: _Forced | None,
        payload: Any,
        verified: bool | None,
        headers: Mapping[str, str],
    ) -> tuple[int, list[tuple[str, str]]]:
        if forced is not None:
            extra = [] if forced.retry_after is None else [("retry-after", str(forced.retry_after))]
            return forced.status, extra
        if path == GONE_PATH:
            return 410, []
        if path == FAIL_PATH:
            return 503, []
        if payload is None or not headers.get("webhook-id"):
            return 400, []
        if verified is False and self._reject_unverified:
            return 401, []
        return 200, []

    def _verified(self, path: str, headers: Mapping[str, str], body: bytes) -> bool | None:
        secrets = self._by_path.get(path, self._secrets)
        if not secrets:
            return None
        return signature_verifies(headers, body, secrets, time.time())

    def _message_id(self, webhook_id: str) -> str:
        if webhook_id and webhook_id in self._taken:
            return self._taken[webhook_id]
        self._count += 1
        message_id = f"sink-{self._count}"
        if webhook_id:
            self._taken[webhook_id] = message_id
        return message_id

    def _record(self, entry: dict[str, Any], *, status: int) -> None:
        # 0: no answer was given in time (a hang).
        self.journal.record({**entry, "status": status})


def signature_verifies(
    headers: Mapping[str, str], body: bytes, secrets: Iterable[str], now: float
) -> bool:
    """Does one ``v1`` entry of ``webhook-signature`` match one of ``secrets``, with a
    timestamp within the tolerance of ``now``?"""
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "").split()
    if not (msg_id and timestamp.isdigit() and signatures):
        return False
    if abs(now - int(timestamp)) > TIMESTAMP_TOLERANCE_SECONDS:
        return False
    for secret in secrets:
        try:
            expected = webhook_signature(msg_id, int(timestamp), body, secret)
        except ValueError:
            continue  # a malformed expected secret verifies nothing
        if any(hmac.compare_digest(expected, given) for given in signatures):
            return True
    return False


async def _read_body(receive: Receive) -> bytes | None:
    """The request body; None when it is over the limit."""
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        chunk: bytes = message.get("body", b"")
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
        if not message.get("more_body", False):
            return body


async def _answer(
    send: Send, status: int, headers: Sequence[tuple[str, str]] = (), body: str = ""
) -> None:
    text = body or (
        json.dumps({"received": True})
        if status == 200
        else json.dumps({"error": _REASONS.get(status, "error")})
    )
    data = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *[(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
