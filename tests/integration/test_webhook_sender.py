"""WebhookSender against a real HTTP receiver on loopback that verifies Standard Webhooks
signatures with the reference library, and how it classifies each way a delivery fails."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from application.ports.sender import DeliveryFailed
from domain.notification import (
    Address,
    AddressRejection,
    Channel,
    Content,
    DeliveryResult,
    ErrorClass,
    NewNotification,
    Notification,
    Priority,
)
from infrastructure.senders import (
    SsrfGuard,
    WebhookSender,
    parse_retry_after,
    webhook_body,
)
from infrastructure.senders.webhook import WebhookHttp

pytestmark = pytest.mark.integration

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZC1zZWNy"
OTHER_SECRET = "whsec_b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldC1vdGhl"
CREATED_AT = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
REASONS = {200: "OK", 302: "Found", 400: "Bad Request", 410: "Gone", 429: "Too Many Requests"}


@dataclass
class Received:
    target: str
    headers: dict[str, str]
    body: bytes
    # The payload as the reference library parsed it after verifying, or why it refused.
    verified: Any = None
    verify_error: str = ""


@dataclass
class Receiver:
    """A minimal HTTP/1.1 server: records each request, verifies its signature, answers with
    ``status``/``headers``/``body``, never answers when ``hang`` is set, or closes the
    connection without a word when ``drop`` is."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    hang: bool = False
    drop: bool = False
    received: list[Received] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        if ssl_context is not None:
            ssl_context.sni_callback = lambda obj, name, ctx: self.server_names.append(name)
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode("latin-1").split()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            record = Received(target=request_line[1], headers=headers, body=body)
            try:
                record.verified = Webhook(SECRET).verify(body, headers)
            except Exception as exc:
                record.verify_error = repr(exc)
            self.received.append(record)
            if self.hang:
                await self._release.wait()
                return
            if self.drop:
                return
            head = [f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Status')}"]
            head += [f"{k}: {v}" for k, v in self.headers.items()]
            head += [f"content-length: {len(self.body)}", "connection: close", "", ""]
            writer.write("\r\n".join(head).encode("latin-1") + self.body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


class KeepAliveServer:
    """An HTTP/1.1 server that answers every request 200 and keeps each connection open,
    counting connections and answers."""

    def __init__(self) -> None:
        self.connections = 0
        self.answered = 0
        self._server: asyncio.Server | None = None

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        return int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while await reader.readline():
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                await reader.readexactly(length)
                self.answered += 1
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


class StaticSecrets:
    def __init__(self, *secrets: str) -> None:
        self.secrets = list(secrets or (SECRET,))
        self.asked: list[tuple[str, datetime]] = []

    async def secrets_for(self, notification: Notification, now: datetime) -> list[str]:
        self.asked.append((notification.tenant_id, now))
        return self.secrets


def fixed_resolver(
    table: dict[str, Sequence[str]],
) -> Any:
    async def resolve(host: str, port: int) -> Sequence[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    return resolve


def make_notification(url: str, id: str = "ntf_01HXYZ") -> Notification:
    return Notification.accept(
        NewNotification(
            request_id="req-1",
            user_id="user-7",
            channel=Channel.WEBHOOK,
            priority=Priority.HIGH,
            category="order_shipped",
            content=Content(title="Shipped", body="Your order is on its way ✓"),
            address=Address.parse("webhook_url", url),
            metadata={"order": "42", "carrier": "ups"},
        ),
        id=id,
        tenant_id="tenant-a",
        caller="svc-orders",
        fingerprint="x",
        now=CREATED_AT,
    )


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[WebhookHttp]:
    http = WebhookHttp()
    yield http
    await http.aclose()


def sender(
    client: WebhookHttp,
    *,
    allow_private: bool = True,
    timeout: float = 5.0,
    resolver: Any = None,
    secrets: StaticSecrets | None = None,
) -> WebhookSender:
    guard = (
        SsrfGuard(allow_private=allow_private)
        if resolver is None
        else SsrfGuard(allow_private=allow_private, resolver=resolver)
    )
    return WebhookSender(client, secrets or StaticSecrets(), guard, timeout=timeout)


async def failure(webhooks: WebhookSender, notification: Notification) -> DeliveryFailed:
    with pytest.raises(DeliveryFailed) as caught:
        await webhooks.send(notification)
    assert caught.value.provider == "webhook"
    return caught.value


# -- success ----------------------------------------------------------------------------------


async def test_delivers_a_signed_payload_that_the_reference_library_verifies(
    receiver: Receiver, client: WebhookHttp
) -> None:
    receiver.headers = {"webhook-message-id": "rcv-123"}
    secrets = StaticSecrets()
    notification = make_notification(f"http://127.0.0.1:{receiver.port}/hooks/notify?src=n")
    before = int(time.time())

    result = await sender(client, secrets=secrets).send(notification)

    assert result == DeliveryResult(provider="webhook", provider_message_id="rcv-123")
    [(tenant, asked_at)] = secrets.asked
    assert tenant == "tenant-a"
    # The secrets asked for are those in force when the signature's timestamp was taken.
    assert int(asked_at.timestamp()) == int(got_timestamp(receiver))
    [got] = receiver.received
    assert got.verify_error == ""
    assert got.target == "/hooks/notify?src=n"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-id"] == notification.id
    assert before <= int(got.headers["webhook-timestamp"]) <= int(time.time())
    assert got.verified == {
        "type": "order_shipped",
        "timestamp": "2026-03-04T05:06:07.890123Z",
        "data": {
            "id": "ntf_01HXYZ",
            "user_id": "user-7",
            "channel": "WEBHOOK",
            "priority": "HIGH",
            "category": "order_shipped",
            "title": "Shipped",
            "body": "Your order is on its way ✓",
            "metadata": {"order": "42", "carrier": "ups"},
            "created_at": "2026-03-04T05:06:07.890123Z",
        },
    }
    assert got.body == webhook_body(notification)


async def test_successive_deliveries_reuse_one_kept_alive_connection() -> None:
    """A success's (empty or small) body is read to its end: an unread response would close
    the connection, and every delivery would pay for a new one."""
    server = KeepAliveServer()
    port = await server.start()
    http = WebhookHttp()
    try:
        webhooks = sender(http)
        for i in range(3):
            url = f"http://127.0.0.1:{port}/h"
            await webhooks.send(make_notification(url, id=f"ntf_{i}"))
        assert (server.answered, server.connections) == (3, 1)
    finally:
        await http.aclose()
        server.close()


async def test_a_rendered_webhook_payload_travels_in_the_body(
    receiver: Receiver, client: WebhookHttp
) -> None:
    notification = make_notification(f"http://127.0.0.1:{receiver.port}/")
    notification.content = Content("", "", data={"order": {"id": 42, "items": ["a", "b"]}})
    await sender(client).send(notification)
    (got,) = receiver.received
    assert got.verify_error == ""
    assert json.loads(got.body)["data"]["payload"] == {"order": {"id": 42, "items": ["a", "b"]}}


async def test_a_retry_sends_the_same_id_and_the_same_bytes(
    receiver: Receiver, client: WebhookHttp
) -> None:
    notification = make_notification(f"http://127.0.0.1:{receiver.port}/")
    webhooks = sender(client)

    await webhooks.send(notification)
    await webhooks.send(notification)

    first, second = receiver.received
    assert first.verify_error == second.verify_error == ""
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == notification.id
    assert first.body == second.body == webhook_body(notification)


@pytest.mark.parametrize(
    ("status", "headers", "message_id"),
    [
        (202, {"x-request-id": "req-9"}, "req-9"),
        (204, {}, ""),
        (200, {"webhook-message-id": "a", "x-request-id": "b"}, "a"),
    ],
)
async def test_any_2xx_is_accepted_with_the_receivers_message_id(
    receiver: Receiver,
    client: WebhookHttp,
    status: int,
    headers: dict[str, str],
    message_id: str,
) -> None:
    receiver.status, receiver.headers = status, headers
    result = await sender(client).send(make_notification(f"http://127.0.0.1:{receiver.port}/"))
    assert result.provider_message_id == message_id


# -- classification of refusals ---------------------------------------------------------------


async def test_500_is_transient(receiver: Receiver, client: WebhookHttp) -> None:
    receiver.status, receiver.body = 500, b"database exploded"
    failed = await failure(sender(client), make_notification(f"http://127.0.0.1:{receiver.port}/"))
    # Not PROVIDER_DOWN: there is no other provider for a tenant's endpoint, and an
    # application's 500 does not prove it did nothing with the payload.
    assert failed.error_class is ErrorClass.TRANSIENT
    assert failed.retry_after is None
    assert failed.rejection is None
    assert "500" in failed.message
    assert "database exploded" in failed.message
    # The receiver's words stay in the attempt record; log lines get the status alone.
    assert failed.summary == "HTTP 500"


async def test_429_is_transient_and_honours_retry_after_seconds(
    receiver: Receiver, client: WebhookHttp
) -> None:
    receiver.status, receiver.headers = 429, {"retry-after": "7"}
    failed = await failure(sender(client), make_notification(f"http://127.0.0.1:{receiver.port}/"))
    assert failed.error_class is ErrorClass.TRANSIENT
    assert failed.retry_after == timedelta(seconds=7)


async def test_503_honours_retry_after_as_an_http_date(
    receiver: Receiver, client: WebhookHttp
) -> None:
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=120)
    receiver.status = 503
    receiver.headers = {"retry-after": format_datetime(at, usegmt=True)}
    failed = await failure(sender(client), make_notification(f"http://127.0.0.1:{receiver.port}/"))
    assert failed.error_class is ErrorClass.TRANSIENT
    assert failed.retry_after is not None
    assert timedelta(seconds=110) <= failed.retry_after <= timedelta(seconds=120)


@pytest.mark.parametrize("status", [408, 425, 421, 502, 504])
async def test_other_retryable_statuses_are_transient(
    receiver: Receiver, client: WebhookHttp, status: int
) -> None:
    receiver.status = status
    failed = await failure(sender(client), make_notification(f"http://127.0.0.1:{receiver.port}/"))
    assert failed.error_class is ErrorClass.TRANSIENT


async def test_410_is_permanent_and_says_the_endpoint_is_gone(
    receiver: Receiver, client: WebhookHttp
) -> None:
    receiver.status = 410
    failed = await failure(sender(client), make_notification(f"http://127.0.0.1:{receiver.port}/"))
    assert failed.error_class is ErrorClass.PERMANENT
    # What makes the recipient's record stop using the endpoint.
    assert failed.rejection is AddressRejection.GONE
    assert "gone" in failed.message.lower()


@pytest.mark.parametrize("status", [400, 401, 404, 413])
async def test_other_4xx_is_permanent(receiver: Receiver, client: WebhookHttp, status: int) -> None:
    receiver.status, receiver.body = status, b'{"error": "bad payload"}'
    webhooks = sender(client)
    failed = await failure(webhooks, make_notification(f"http://127.0.0.1:{receiver.port}/"))
    assert failed.error_class is ErrorClass.PERMANENT
    assert failed.rejection is None, "only 410 says the endpoint is gone"
    assert str(status) in failed.message
    assert "bad payload" in failed.message
    assert failed.summary == f"HTTP {status}"


async def test_a_redirect_is_permanent_and_not_followed(
    receiver: Receiver, client: WebhookHttp
) -> None:
    location = f"http://127.0.0.1:{receiver.port}/elsewhere"
    receiver.status, receiver.headers = 302, {"location": location}
    failed = await failure(sender(client), make_notification(f"http://127.0.0.1:{receiver.port}/"))
    assert failed.error_class is ErrorClass.PERMANENT
    assert location in failed.message
    assert location not in failed.summary
    assert [r.target for r in receiver.received] == ["/"]


# -- transport failures -----------------------------------------------------------------------


async def test_a_receiver_that_never_answers_may_have_accepted_within_the_timeout(
    receiver: Receiver, client: WebhookHttp
) -> None:
    receiver.hang = True
    started = time.monotonic()
    failed = await failure(
        sender(client, timeout=0.5), make_notification(f"http://127.0.0.1:{receiver.port}/")
    )
    assert failed.error_class is ErrorClass.MAYBE_ACCEPTED
    assert time.monotonic() - started < 2.0
    # The request did arrive: the retry will carry the same id so the receiver can dedupe.
    assert len(receiver.received) == 1


async def test_a_connection_dropped_after_the_request_may_have_accepted(
    receiver: Receiver, client: WebhookHttp
) -> None:
    receiver.drop = True
    failed = await failure(sender(client), make_notification(f"http://127.0.0.1:{receiver.port}/"))
    assert failed.error_class is ErrorClass.MAYBE_ACCEPTED
    assert len(receiver.received) == 1


async def test_connection_refused_is_provider_down(client: WebhookHttp) -> None:
    port = free_port()
    failed = await failure(sender(client), make_notification(f"http://127.0.0.1:{port}/"))
    assert failed.error_class is ErrorClass.PROVIDER_DOWN
    assert f"127.0.0.1:{port}" in failed.message


async def test_a_deadline_passing_before_the_request_left_is_provider_down(
    client: WebhookHttp,
) -> None:
    # A TCP listener that never speaks TLS: the handshake hangs, so no byte of the request
    # can have left when the deadline passes.
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        resolver = fixed_resolver({"silent.test": ["127.0.0.1"]})
        started = time.monotonic()
        failed = await failure(
            sender(client, resolver=resolver, timeout=0.5),
            make_notification(f"https://silent.test:{port}/"),
        )
    finally:
        silent.close()
    assert failed.error_class is ErrorClass.PROVIDER_DOWN
    assert time.monotonic() - started < 2.0


async def test_an_unresolvable_host_is_transient(client: WebhookHttp) -> None:
    webhooks = sender(client, allow_private=False, resolver=fixed_resolver({}))
    failed = await failure(webhooks, make_notification("https://no-such-host.example/hook"))
    assert failed.error_class is ErrorClass.TRANSIENT
    assert "no-such-host.example" in failed.message


async def test_an_unusable_secret_is_permanent(receiver: Receiver, client: WebhookHttp) -> None:
    webhooks = sender(client, secrets=StaticSecrets("whsec_***"))
    failed = await failure(webhooks, make_notification(f"http://127.0.0.1:{receiver.port}/"))
    assert failed.error_class is ErrorClass.PERMANENT
    assert receiver.received == []


async def test_a_custom_provider_name_is_what_failures_and_results_carry(
    receiver: Receiver, client: WebhookHttp
) -> None:
    webhooks = WebhookSender(
        client, StaticSecrets(), SsrfGuard(allow_private=True), provider_name="webhook-eu"
    )
    assert (webhooks.name, webhooks.channel) == ("webhook-eu", Channel.WEBHOOK)
    assert WebhookSender.name == "webhook"
    result = await webhooks.send(make_notification(f"http://127.0.0.1:{receiver.port}/"))
    assert result.provider == "webhook-eu"
    receiver.status = 400
    with pytest.raises(DeliveryFailed) as caught:
        await webhooks.send(make_notification(f"http://127.0.0.1:{receiver.port}/"))
    assert caught.value.provider == "webhook-eu"


# -- secret rotation: two signatures ----------------------------------------------------------


async def test_two_secrets_make_two_signatures_each_verifiable_alone(
    receiver: Receiver, client: WebhookHttp
) -> None:
    notification = make_notification(f"http://127.0.0.1:{receiver.port}/")
    await sender(client, secrets=StaticSecrets(SECRET, OLD_SECRET)).send(notification)

    [got] = receiver.received
    signatures = got.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(s.startswith("v1,") for s in signatures)
    # A receiver that has switched to the new secret and one still on the old both verify.
    assert Webhook(SECRET).verify(got.body, got.headers)["data"]["id"] == notification.id
    assert Webhook(OLD_SECRET).verify(got.body, got.headers)["data"]["id"] == notification.id
    with pytest.raises(Exception, match=r"(?i)signature"):
        Webhook(OTHER_SECRET).verify(got.body, got.headers)


async def test_no_secret_at_all_is_permanent(receiver: Receiver, client: WebhookHttp) -> None:
    secrets = StaticSecrets()
    secrets.secrets = []
    failed = await failure(
        sender(client, secrets=secrets), make_notification(f"http://127.0.0.1:{receiver.port}/")
    )
    assert failed.error_class is ErrorClass.PERMANENT
    assert receiver.received == []


# -- SSRF guard -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{port}/",
        "http://localhost:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://100.64.0.1/",
        "http://0.0.0.0:{port}/",
    ],
)
async def test_the_guard_refuses_non_public_targets(
    receiver: Receiver, client: WebhookHttp, url: str
) -> None:
    webhooks = sender(client, allow_private=False, timeout=0.5)
    failed = await failure(webhooks, make_notification(url.format(port=receiver.port)))
    assert failed.error_class is ErrorClass.PERMANENT
    assert "SSRF" in failed.message
    assert receiver.received == []


async def test_the_guard_refuses_a_name_when_any_of_its_addresses_is_private(
    client: WebhookHttp,
) -> None:
    resolver = fixed_resolver({"mixed.example": ["93.184.215.14", "192.168.1.10"]})
    webhooks = sender(client, allow_private=False, resolver=resolver, timeout=0.5)
    failed = await failure(webhooks, make_notification("https://mixed.example/hook"))
    assert failed.error_class is ErrorClass.PERMANENT
    assert "'mixed.example' resolves to 192.168.1.10" in failed.message


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_allow_private_lets_local_receivers_through(
    receiver: Receiver, client: WebhookHttp, host: str
) -> None:
    if host == "localhost":
        # localhost may resolve to ::1 first; the receiver listens on 127.0.0.1 only.
        resolver = fixed_resolver({"localhost": ["127.0.0.1"]})
        webhooks = sender(client, allow_private=True, resolver=resolver)
    else:
        webhooks = sender(client, allow_private=True)
    await webhooks.send(make_notification(f"http://{host}:{receiver.port}/"))
    assert len(receiver.received) == 1


@pytest.mark.parametrize("address", ["10.0.0.1", "::1", "192.168.0.1", "fe80::1"])
async def test_allow_private_allows_private_addresses(address: str) -> None:
    resolved = await SsrfGuard(allow_private=True).resolve(address, 443)
    assert resolved == [ipaddress.ip_address(address)]


@pytest.mark.parametrize("address", ["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"])
async def test_metadata_endpoints_stay_refused_even_with_allow_private(address: str) -> None:
    guard = SsrfGuard(allow_private=True)
    assert guard.refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("93.184.215.14", False),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", False),
        ("::ffff:93.184.215.14", False),
        ("::ffff:10.1.2.3", True),
        ("2002:7f00:1::", True),  # 6to4 wrapping 127.0.0.1
        ("64:ff9b::a00:1", True),  # NAT64 wrapping 10.0.0.1
        ("224.0.0.1", True),
        ("fc00::1", True),
        ("240.0.0.1", True),
    ],
)
def test_refusal_by_address(address: str, refused: bool) -> None:
    reason = SsrfGuard().refusal(ipaddress.ip_address(address))
    assert (reason is not None) is refused


async def test_the_system_resolver_maps_localhost_to_loopback() -> None:
    guard = SsrfGuard(allow_private=True)
    addresses = await guard.resolve("localhost", 80)
    assert addresses
    assert all(a.is_loopback for a in addresses)


# -- pinning to the checked address -----------------------------------------------------------


async def test_connects_to_the_checked_address_and_keeps_the_name_in_host(
    receiver: Receiver, client: WebhookHttp
) -> None:
    # "receiver.test" exists only in this resolver: the request can only arrive if the sender
    # connected to the address the guard returned, not to a second lookup of the name.
    webhooks = sender(client, resolver=fixed_resolver({"receiver.test": ["127.0.0.1"]}))
    await webhooks.send(make_notification(f"http://receiver.test:{receiver.port}/in"))
    [got] = receiver.received
    assert got.headers["host"] == f"receiver.test:{receiver.port}"
    assert got.verify_error == ""


async def test_falls_back_to_the_next_checked_address_when_one_refuses(
    receiver: Receiver, client: WebhookHttp
) -> None:
    # The receiver listens on 127.0.0.1 only, so 127.0.0.2 refuses the connection.
    resolver = fixed_resolver({"receiver.test": ["127.0.0.2", "127.0.0.1"]})
    await sender(client, resolver=resolver).send(
        make_notification(f"http://receiver.test:{receiver.port}/")
    )
    assert len(receiver.received) == 1


@dataclass
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A self-signed certificate for receiver.test and contexts that serve and trust it."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    directory: Path = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=receiver.test", "-addext", "subjectAltName=DNS:receiver.test"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return Tls(server=server, client=ssl.create_default_context(cafile=str(cert)))


@pytest.fixture
async def tls_receiver(tls: Tls) -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start(ssl_context=tls.server)
    yield server
    await server.stop()


async def test_https_pins_the_address_and_verifies_the_certificate_for_the_name(
    tls: Tls, tls_receiver: Receiver
) -> None:
    resolver = fixed_resolver({"receiver.test": ["127.0.0.1"]})
    http = WebhookHttp(verify=tls.client)
    try:
        result = await sender(http, resolver=resolver).send(
            make_notification(f"https://receiver.test:{tls_receiver.port}/in")
        )
    finally:
        await http.aclose()
    assert result.provider == "webhook"
    assert tls_receiver.server_names == ["receiver.test"]
    [got] = tls_receiver.received
    assert got.headers["host"] == f"receiver.test:{tls_receiver.port}"
    assert got.verify_error == ""


async def test_https_rejects_a_certificate_for_another_name(
    tls: Tls, tls_receiver: Receiver
) -> None:
    resolver = fixed_resolver({"impostor.test": ["127.0.0.1"]})
    http = WebhookHttp(verify=tls.client)
    try:
        failed = await failure(
            sender(http, resolver=resolver),
            make_notification(f"https://impostor.test:{tls_receiver.port}/in"),
        )
    finally:
        await http.aclose()
    # The handshake failed, so the request never left: nothing can have been accepted.
    assert failed.error_class is ErrorClass.PROVIDER_DOWN
    assert tls_receiver.server_names == ["impostor.test"]
    assert tls_receiver.received == []


async def test_a_kept_alive_tls_connection_never_carries_another_names_request(tls: Tls) -> None:
    """HTTPS connections are kept alive per (address, port, verified name): a second request
    for the same name reuses the connection, one for another name on the same address opens
    its own and is verified for that name (and fails here, the certificate is not for it)."""
    names: list[str | None] = []
    tls.server.sni_callback = lambda obj, name, ctx: names.append(name)
    server = KeepAliveServer()
    port = await server.start(tls.server)
    http = WebhookHttp(verify=tls.client)
    resolver = fixed_resolver({"receiver.test": ["127.0.0.1"], "impostor.test": ["127.0.0.1"]})
    webhooks = sender(http, resolver=resolver)
    try:
        for i in range(2):
            url = f"https://receiver.test:{port}/in"
            await webhooks.send(make_notification(url, id=f"ntf_{i}"))
        assert (server.connections, names) == (1, ["receiver.test"])

        failed = await failure(webhooks, make_notification(f"https://impostor.test:{port}/in"))
        assert failed.error_class is ErrorClass.PROVIDER_DOWN
        assert names == ["receiver.test", "impostor.test"]
    finally:
        tls.server.sni_callback = None
        await http.aclose()
        server.close()


# -- pure helpers -----------------------------------------------------------------------------


def test_retry_after_parsing() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("0", now) == timedelta(0)
    assert parse_retry_after(" 30 ", now) == timedelta(seconds=30)
    assert parse_retry_after("Thu, 01 Jan 2026 12:01:00 GMT", now) == timedelta(minutes=1)
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == timedelta(0)
    assert parse_retry_after("-5", now) is None
    assert parse_retry_after("soon", now) is None


def test_the_body_is_compact_sorted_json() -> None:
    body = webhook_body(make_notification("https://example.com/hook"))
    assert body == json.dumps(json.loads(body), separators=(",", ":"), sort_keys=True).encode(
        "ascii"
    )


def got_timestamp(receiver: Receiver) -> str:
    return receiver.received[0].headers["webhook-timestamp"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
