"""The WEBHOOK channel: a signed JSON POST to a tenant's URL, per Standard Webhooks."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Protocol

import aiohttp
import httpx
import yarl

from application.ports.sender import DeliveryFailed
from domain.notification import AddressRejection, Channel, DeliveryResult, ErrorClass, Notification
from infrastructure.senders.http_failures import retry_after_of, transport_failure
from infrastructure.senders.ssrf import HostUnresolvable, IPAddress, SsrfGuard, SsrfRefused
from infrastructure.senders.standard_webhooks import webhook_headers

# Receivers that name the message they stored; the first one present becomes the attempt's
# provider message id.
_MESSAGE_ID_HEADERS = ("webhook-message-id", "x-request-id")
_MAX_MESSAGE_ID_CHARS = 256
# Only a little of an error response is read: enough to explain a rejection, never a large body.
_SNIPPET_BYTES = 512
_SNIPPET_WAIT_SECONDS = 1.0
# A success's body is read to its end, so the connection goes back to the pool (an unread
# response closes it, and the next delivery pays for a new connection); a larger or slower
# body than this is not worth the wait.
_DRAIN_BYTES = 64 * 1024
_TRANSIENT_STATUSES = frozenset({408, 425, 429})
# 421 means "not on this connection": the next attempt opens a new one, so it is worth a retry.
_MISDIRECTED = 421


class WebhookSecrets(Protocol):
    async def secrets_for(self, notification: Notification, now: datetime) -> list[str]:
        """The Standard Webhooks signing secrets (``whsec_<base64>``) for this notification sent
        at ``now``, current first, then any replaced one whose overlap has not ended: its
        recipient endpoint's own when it goes to that endpoint and one is set, else the
        tenant's."""
        ...


class WebhookHttp:
    """The HTTP client webhooks go out through: one aiohttp session, opened on first use inside
    the running loop. aiohttp's C parser and pool cost about a fifth of the CPU per request
    that httpx and httpcore did, and a worker's CPU went mostly to HTTP.

    Its pool keys a connection by address, port, TLS context *and* the name the certificate
    was verified for, so a kept-alive TLS connection verified for one name never carries a
    request for another name on the same address. No cookie jar: nothing one tenant's
    receiver sets may travel to another's."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        max_connections: int = 200,
        keepalive_seconds: float = 15.0,
    ) -> None:
        self._verify = verify
        self._max_connections = max_connections
        self._keepalive_seconds = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            progress = aiohttp.TraceConfig()
            progress.on_connection_create_end.append(_connected)
            progress.on_connection_reuseconn.append(_connected)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections,
                    keepalive_timeout=self._keepalive_seconds,
                    ssl=self._verify,
                    # Names are resolved (and checked) by the SSRF guard; requests go to addresses.
                    use_dns_cache=False,
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                # The sender's own deadline covers resolution, connection and the answer.
                timeout=aiohttp.ClientTimeout(),
                auto_decompress=False,
                trace_configs=[progress],
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> WebhookHttp:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


async def _connected(_: aiohttp.ClientSession, context: SimpleNamespace, __: object) -> None:
    progress = context.trace_request_ctx
    if isinstance(progress, _Progress):
        progress.connected = True


def webhook_body(notification: Notification) -> bytes:
    """The JSON payload. Built only from stored fields, so every retry sends the same bytes and
    the signature a receiver saw on a failed attempt describes the same content."""
    n = notification
    payload = {
        "type": n.category,
        "timestamp": _iso(n.created_at),
        "data": {
            "id": n.id,
            "user_id": n.user_id,
            "channel": Channel.WEBHOOK.value,
            "priority": n.priority.name,
            "category": n.category,
            "title": n.content.title,
            "body": n.content.body,
            "metadata": dict(n.metadata),
            "created_at": _iso(n.created_at),
        },
    }
    if n.content.data:
        # A webhook template's payload, as rendered.
        payload["data"]["payload"] = dict(n.content.data)  # type: ignore[index]
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("ascii")


@dataclass
class _Progress:
    """How far one delivery got, which decides what a failure means: nothing can have been
    accepted before a connection (TLS handshake included) to the receiver existed. From then
    on the request may be on its way."""

    resolved: bool = False
    connected: bool = False


class WebhookSender:
    """The one provider of the WEBHOOK channel. Its target is each tenant's own receiver, so a
    failure says nothing about other tenants' receivers: it is not for a circuit breaker."""

    name = "webhook"
    channel = Channel.WEBHOOK

    def __init__(
        self,
        http: WebhookHttp,
        secrets: WebhookSecrets,
        guard: SsrfGuard,
        *,
        timeout: float = 10.0,
        provider_name: str = "webhook",
    ) -> None:
        self._http = http
        self._secrets = secrets
        self._guard = guard
        self._timeout = timeout
        self.name = provider_name

    async def send(self, notification: Notification) -> DeliveryResult:
        address = notification.address
        if address is None or address.kind != "webhook_url":
            raise self._failed(ErrorClass.PERMANENT, "the notification has no webhook_url address")
        try:
            url = _parsed_url(address.value)
        except httpx.InvalidURL as exc:
            raise self._failed(ErrorClass.PERMANENT, f"invalid webhook URL: {exc}") from exc
        body = webhook_body(notification)
        now = datetime.now(UTC)
        secrets = await self._secrets.secrets_for(notification, now)
        try:
            # The id is the notification's, so a receiver that got an attempt whose response was
            # lost can recognise the retry as a duplicate.
            signed = webhook_headers(notification.id, int(now.timestamp()), body, secrets)
        except ValueError as exc:
            raise self._failed(
                ErrorClass.PERMANENT,
                f"signing secret for tenant {notification.tenant_id} is unusable: {exc}",
            ) from exc
        headers = {"content-type": "application/json", **signed}

        progress = _Progress()
        try:
            # One deadline over resolution, connection and the response headers: the per-phase
            # httpx timeouts alone would let a server that trickles bytes hold the worker.
            async with asyncio.timeout(self._timeout):
                addresses = await self._guard.resolve(url.raw_host.decode("ascii"), _port(url))
                progress.resolved = True
                response = await self._post(url, addresses, headers, body, progress)
        except SsrfRefused as exc:
            raise self._failed(ErrorClass.PERMANENT, str(exc)) from exc
        except HostUnresolvable as exc:
            # DNS failures are often passing; a name that stays unresolvable runs out of attempts.
            raise self._failed(ErrorClass.TRANSIENT, str(exc)) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._transport_failure(exc, url, progress) from exc

        try:
            return await self._outcome(response)
        finally:
            # Back to the pool when its body was read to the end, else closed.
            response.release()

    def _transport_failure(
        self, exc: Exception, url: httpx.URL, progress: _Progress
    ) -> DeliveryFailed:
        if not progress.resolved:
            return self._failed(
                ErrorClass.TRANSIENT, f"resolving {_origin(url)} took over {self._timeout}s"
            )
        if not progress.connected:
            # Refused, unreachable, a failed TLS handshake or the deadline passing before a byte
            # of the request left: the receiver cannot have seen it.
            reason = str(exc) or f"no connection within {self._timeout}s"
            return self._failed(
                ErrorClass.PROVIDER_DOWN,
                f"cannot connect to {_origin(url)}: {type(exc).__name__} {reason}",
            )
        # The request went out and no answer came: the receiver may have taken it. The retry
        # goes to the same URL with the same webhook-id, so the receiver can drop a duplicate.
        return transport_failure(exc, self.name, _origin(url), self._timeout)

    async def _post(
        self,
        url: httpx.URL,
        addresses: list[IPAddress],
        headers: dict[str, str],
        body: bytes,
        progress: _Progress,
    ) -> aiohttp.ClientResponse:
        """POST to the checked addresses themselves, never to the name, which could resolve
        differently a moment later (DNS rebinding)."""
        host = url.raw_host.decode("ascii")
        # Host keeps the name (virtual hosting); SNI keeps it too, and certificate verification
        # checks the certificate against it rather than against the IP.
        headers = {**headers, "host": url.netloc.decode("ascii")}
        server_hostname = host if url.scheme == "https" and not _is_ip_literal(host) else None
        session = self._http.session()
        for address in addresses[:-1]:
            try:
                return await self._post_to(
                    session, url, address, headers, body, server_hostname, progress
                )
            except aiohttp.ClientConnectorError:
                # Nothing was sent; the next checked address is just as valid a target.
                continue
        return await self._post_to(
            session, url, addresses[-1], headers, body, server_hostname, progress
        )

    @staticmethod
    async def _post_to(
        session: aiohttp.ClientSession,
        url: httpx.URL,
        address: IPAddress,
        headers: dict[str, str],
        body: bytes,
        server_hostname: str | None,
        progress: _Progress,
    ) -> aiohttp.ClientResponse:
        # Only these headers: no session defaults, auth or cookies, which must not leak from
        # one tenant's receiver to another.
        return await session.post(
            _pinned_url(url, str(address)),
            headers=headers,
            data=body,
            allow_redirects=False,
            server_hostname=server_hostname,
            trace_request_ctx=progress,
        )

    async def _outcome(self, response: aiohttp.ClientResponse) -> DeliveryResult:
        status = response.status
        if 200 <= status < 300:
            await _drain(response)
            return DeliveryResult(provider=self.name, provider_message_id=_message_id(response))
        if 300 <= status < 400:
            # Following would send the signed payload to a target the guard never checked.
            location = response.headers.get("location", "(no Location header)")
            raise self._failed(
                ErrorClass.PERMANENT,
                f"HTTP {status} redirect to {location}; redirects are not followed",
                summary=f"HTTP {status} redirect; redirects are not followed",
            )
        detail = await _snippet(response)
        if status == 410:
            # The recipient's record stops using the endpoint (see AddressRejection.GONE).
            raise self._failed(
                ErrorClass.PERMANENT,
                f"HTTP 410 Gone: the webhook endpoint no longer exists{detail}",
                rejection=AddressRejection.GONE,
                summary="HTTP 410 Gone: the webhook endpoint no longer exists",
            )
        # 5xx stays TRANSIENT rather than PROVIDER_DOWN: there is no other provider to fail
        # over to, and an application server's 500 does not prove it did nothing with the
        # payload.
        if status in _TRANSIENT_STATUSES or status == _MISDIRECTED or status >= 500:
            raise self._failed(
                ErrorClass.TRANSIENT,
                f"HTTP {status}{detail}",
                retry_after=retry_after_of(response),
                summary=f"HTTP {status}",
            )
        raise self._failed(ErrorClass.PERMANENT, f"HTTP {status}{detail}", summary=f"HTTP {status}")

    def _failed(
        self,
        error_class: ErrorClass,
        message: str,
        *,
        retry_after: timedelta | None = None,
        rejection: AddressRejection | None = None,
        summary: str | None = None,
    ) -> DeliveryFailed:
        return DeliveryFailed(
            error_class,
            message,
            provider=self.name,
            retry_after=retry_after,
            rejection=rejection,
            summary=summary,
        )


# Parsing a URL is a good part of a send's CPU, and a tenant's webhooks go to few URLs: both
# the URL and its copy pinned to a checked address are remembered (httpx.URL is immutable).
# An invalid URL raises, and is not remembered.
@functools.lru_cache(maxsize=4096)
def _parsed_url(value: str) -> httpx.URL:
    return httpx.URL(value)


@functools.lru_cache(maxsize=4096)
def _pinned_url(url: httpx.URL, address: str) -> yarl.URL:
    return yarl.URL(str(url.copy_with(host=address)), encoded=True)


async def _snippet(response: aiohttp.ClientResponse) -> str:
    """The start of an error response's body, as ``": <text>"``; empty when there is none or it
    does not arrive promptly (the status alone already decides the outcome)."""
    data = b""
    try:
        async with asyncio.timeout(_SNIPPET_WAIT_SECONDS):
            while len(data) < _SNIPPET_BYTES and (
                chunk := await response.content.read(_SNIPPET_BYTES - len(data))
            ):
                data += chunk
    except (TimeoutError, aiohttp.ClientError):
        pass
    text = " ".join(data[:_SNIPPET_BYTES].decode("utf-8", "replace").split())
    return f": {text[:200]}" if text else ""


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read a success's body to its end, bounded in size and time: the status already decided
    the outcome, this only lets the connection be kept alive."""
    read = 0
    try:
        async with asyncio.timeout(_SNIPPET_WAIT_SECONDS):
            while chunk := await response.content.read(_DRAIN_BYTES):
                read += len(chunk)
                if read > _DRAIN_BYTES:
                    return
    except (TimeoutError, aiohttp.ClientError):
        pass


def _message_id(response: aiohttp.ClientResponse) -> str:
    for name in _MESSAGE_ID_HEADERS:
        value = response.headers.get(name, "").strip()
        if value:
            return value[:_MAX_MESSAGE_ID_CHARS]
    return ""


def _iso(at: datetime) -> str:
    # Stored times are UTC; a naive one is taken as UTC rather than as the host's local time.
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _origin(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.netloc.decode('ascii')}"


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
