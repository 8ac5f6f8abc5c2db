"""The FCM and APNs providers against the sandbox peers: FCM HTTP v1 with its OAuth token
endpoint over HTTP/1.1, APNs over HTTP/2 with TLS, each checking credentials and answering in
the vendor's shape."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from application.ports.sender import Delivered, DeliveryFailed, Provider
from domain.notification import (
    Address,
    AddressRejection,
    Channel,
    Content,
    ErrorClass,
    NewNotification,
    Notification,
    Priority,
)
from domain.recipient import DevicePlatform
from infrastructure.sandbox.http import SandboxTls, serve_asgi
from infrastructure.sandbox.push import (
    PushSandboxes,
    SandboxApns,
    SandboxFcm,
    write_apns_key,
    write_fcm_service_account,
)
from infrastructure.senders.push import (
    ApnsProvider,
    ApnsTokenSigner,
    FcmProvider,
    GoogleServiceAccountTokens,
    PlatformRoutedSender,
    ServiceAccount,
    apns_id_for,
)

pytestmark = pytest.mark.integration

PROJECT = "demo-project"
TOPIC = "com.example.shop"
KEY_ID = "ABC123DEFG"
TEAM_ID = "TEAM123456"
IOS_TOKEN = "a1" * 32
TIMEOUT = 2.0
# Long enough that only the client's timeout can end the wait.
HANG_SECONDS = 30.0


def push(
    token: str,
    *,
    id: str | None = None,
    title: str = "Shipped",
    body: str = "Your order is on its way",
    data: dict[str, Any] | None = None,
    priority: Priority = Priority.HIGH,
    expires_at: datetime | None = None,
    user_id: str = "user-7",
) -> Notification:
    return Notification.accept(
        NewNotification(
            request_id=f"req-{uuid.uuid4()}",
            user_id=user_id,
            channel=Channel.PUSH,
            priority=priority,
            category="order_shipped",
            content=Content(title, body, data=data or {}),
            address=Address.parse("device_token", token),
            expires_at=expires_at,
        ),
        id=id or str(uuid.uuid4()),
        tenant_id="tenant-a",
        caller="svc-orders",
        fingerprint="fp",
        now=datetime.now(UTC),
    )


async def failure(provider: Provider, notification: Notification) -> DeliveryFailed:
    with pytest.raises(DeliveryFailed) as caught:
        await provider.send(notification)
    assert caught.value.provider == provider.name
    return caught.value


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- FCM ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("push-credentials")


@pytest.fixture(scope="module")
def fcm_account(credentials: Path) -> Path:
    # The token_uri goes nowhere: providers are pointed at the peer by the token_url override.
    return write_fcm_service_account(credentials, PROJECT, "https://oauth2.invalid/token")


@dataclass
class Peer:
    app: Any
    base_url: str


@pytest.fixture
async def fcm(fcm_account: Path) -> AsyncIterator[Peer]:
    app = SandboxFcm(service_accounts=[fcm_account])
    running = await serve_asgi(app)
    yield Peer(app, running.base_url)
    app.release()
    await running.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


def fcm_provider(
    client: httpx.AsyncClient,
    fcm: Peer,
    account: Path,
    *,
    timeout: float = TIMEOUT,
    token_url: str | None = None,
) -> FcmProvider:
    tokens = GoogleServiceAccountTokens(
        ServiceAccount.from_file(account),
        client,
        token_url=f"{fcm.base_url}/token" if token_url is None else token_url,
        timeout=timeout,
    )
    return FcmProvider(
        client, tokens, project_id=tokens.project_id, base_url=fcm.base_url, timeout=timeout
    )


async def test_fcm_delivers_with_one_oauth_token_reused_across_sends(
    fcm: Peer, fcm_account: Path, client: httpx.AsyncClient
) -> None:
    provider = fcm_provider(client, fcm, fcm_account)
    expires_at = datetime.now(UTC) + timedelta(hours=1)
    first = push(
        "android-token-1",
        data={"order": "42", "items": [1, 2], "gift": True},
        expires_at=expires_at,
    )

    result = await provider.send(first)
    again = await provider.send(push("android-token-2", priority=Priority.LOW))

    assert fcm.app.tokens_minted == 1
    assert fcm.app.requests == 2
    assert result.provider == "fcm"
    assert result.provider_message_id.startswith(f"projects/{PROJECT}/messages/")
    assert again.provider_message_id != result.provider_message_id
    one, two = fcm.app.journal.entries
    assert one["message_id"] == result.provider_message_id
    assert two["message_id"] == again.provider_message_id
    assert (one["token"], one["title"], one["body"], one["peer"]) == (
        "android-token-1",
        "Shipped",
        "Your order is on its way",
        "fcm",
    )
    # FCM data values are strings: the others travel JSON-encoded.
    assert one["data"] == {"order": "42", "items": "[1,2]", "gift": "true"}
    message = fcm.app.seen[0]["body"]["message"]
    assert message["android"]["priority"] == "HIGH"
    assert 3590 <= int(message["android"]["ttl"].removesuffix("s")) <= 3600
    assert message["apns"]["headers"]["apns-priority"] == "10"
    assert fcm.app.seen[1]["body"]["message"]["android"] == {"priority": "NORMAL"}
    assert (
        fcm.app.seen[0]["headers"]["authorization"] == fcm.app.seen[1]["headers"]["authorization"]
    )


async def test_fcm_data_only_message_has_no_notification_and_wakes_ios_apps(
    fcm: Peer, fcm_account: Path, client: httpx.AsyncClient
) -> None:
    await fcm_provider(client, fcm, fcm_account).send(
        push("token-silent", title="", body="", data={"sync": "inbox"})
    )

    message = fcm.app.seen[0]["body"]["message"]
    assert "notification" not in message
    assert message["data"] == {"sync": "inbox"}
    assert message["apns"]["payload"] == {"aps": {"content-available": 1}}
    assert message["apns"]["headers"]["apns-push-type"] == "background"


async def test_fcm_concurrent_sends_share_one_token_request(
    fcm: Peer, fcm_account: Path, client: httpx.AsyncClient
) -> None:
    provider = fcm_provider(client, fcm, fcm_account)

    results = await asyncio.gather(*(provider.send(push(f"tok-{i}")) for i in range(8)))

    assert len({r.provider_message_id for r in results}) == 8
    assert fcm.app.token_requests == 1
    assert fcm.app.tokens_minted == 1


async def test_fcm_concurrent_sends_share_one_failed_token_request(
    fcm: Peer, fcm_account: Path, client: httpx.AsyncClient
) -> None:
    fcm.app.fail_next(503, endpoint="token")
    provider = fcm_provider(client, fcm, fcm_account)

    outcomes = await asyncio.gather(
        *(provider.send(push(f"tok-{i}")) for i in range(5)), return_exceptions=True
    )

    assert all(
        isinstance(o, DeliveryFailed) and o.error_class is ErrorClass.PROVIDER_DOWN
        for o in outcomes
    )
    assert fcm.app.token_requests == 1
    assert fcm.app.requests == 0


async def test_fcm_token_is_renewed_shortly_before_it_expires(
    fcm: Peer, fcm_account: Path, client: httpx.AsyncClient
) -> None:
    clock = Clock()
    tokens = GoogleServiceAccountTokens(
        ServiceAccount.from_file(fcm_account),
        client,
        token_url=f"{fcm.base_url}/token",
        monotonic=clock,
    )

    first = await tokens.token()
    clock.now += 3600 - 301
    assert await tokens.token() == first
    clock.now += 2
    renewed = await tokens.token()

    assert renewed != first
    assert fcm.app.tokens_minted == 2


async def test_fcm_uses_the_token_uri_of_the_service_account_file(
    fcm: Peer, credentials: Path, client: httpx.AsyncClient
) -> None:
    account = write_fcm_service_account(credentials / "own", PROJECT, f"{fcm.base_url}/token")
    fcm.app.trust_service_account(account)

    await fcm_provider(client, fcm, account, token_url="").send(push("tok"))

    assert fcm.app.tokens_minted == 1


async def test_fcm_401_gets_a_new_token_and_the_send_succeeds(
    fcm: Peer, fcm_account: Path, client: httpx.AsyncClient
) -> None:
    provider = fcm_provider(client, fcm, fcm_account)
    await provider.send(push("tok-1"))
    fcm.app.expire_tokens()

    result = await provider.send(push("tok-2"))

    assert result.provider_message_id
    assert fcm.app.tokens_minted == 2
    assert fcm.app.requests == 3
    assert [e["token"] for e in fcm.app.journal.entries] == ["tok-1", "tok-2"]


async def test_fcm_401_with_a_fresh_token_is_provider_down(
    fcm: Peer, fcm_account: Path, client: httpx.AsyncClient
) -> None:
    fcm.app.fail_next(401, times=2)

    failed = await failure(fcm_provider(client, fcm, fcm_account), push("tok"))

    assert failed.error_class is ErrorClass.PROVIDER_DOWN
    assert "401" in failed.message
    # One refresh only: a second 401 is not chased with more tokens.
    assert fcm.app.tokens_minted == 2
    assert fcm.app.requests == 2


@pytest.mark.parametrize(
    ("token", "code"), [("unregistered-1", "UNREGISTERED"), ("mismatch-1", "SENDER_ID_MISMATCH")]
)
async def test_fcm_dead_tokens_are_permanent_and_gone(
    fcm: Peer, fcm_account: Path, client: httpx.AsyncClient, token: str, code: str
) -> None:
    failed = await failure(fcm_provider(client, fcm, fcm_account), push(token))

    assert failed.error_class is ErrorClass.PERMANENT
    assert failed.rejection is AddressRejection.GONE
    assert code in failed.message
    assert fcm.app.journal.entries == []


@pytest.mark.parametrize(
    ("token", "data"),
    [("invalid-token", {}), ("tok", {"from": "reserved key"})],
    ids=["bad-token", "bad-payload"],
)
async def test_fcm_invalid_argument_is_permanent_and_keeps_the_token(
    fcm: Peer, fcm_account: Path, client: httpx.AsyncClient, token: str, data: dict[str, Any]
) -> None:
    failed = await failure(fcm_provider(client, fcm, fcm_account), push(token, data=data))

    assert failed.error_class is ErrorClass.PERMANENT
    assert failed.rejection is None
    assert "INVALID_ARGUMENT" in failed.message


async def test_fcm_429_is_transient_with_retry_after(
    fcm: Peer, fcm_account: Path, client: httpx.AsyncClient
) -> None:
    fcm.app.fail_next(429, retry_after=30)

    failed = await failure(fcm_provider(client, fcm, fcm_account), push("tok"))

    assert failed.error_class is ErrorClass.TRANSIENT
    assert failed.retry_after == timedelta(seconds=30)
    assert "QUOTA_EXCEEDED" in failed.message


@pytest.mark.parametrize("status", [500, 503])
async def test_fcm_5xx_is_provider_down(
    fcm: Peer, fcm_account: Path, client: httpx.AsyncClient, status: int
) -> None:
    fcm.app.fail_next(status, retry_after=7)

    failed = await failure(fcm_provider(client, fcm, fcm_account), push("tok"))

    assert failed.error_class is ErrorClass.PROVIDER_DOWN
    assert failed.retry_after == timedelta(seconds=7)


async def test_fcm_hang_after_sending_is_maybe_accepted(
    fcm: Peer, fcm_account: Path, client: httpx.AsyncClient
) -> None:
    provider = fcm_provider(client, fcm, fcm_account, timeout=0.3)
    await provider.send(push("warm-up"))  # the token request must not be what times out
    fcm.app.hang_next(HANG_SECONDS)

    failed = await failure(provider, push("tok"))

    assert failed.error_class is ErrorClass.MAYBE_ACCEPTED
    # The peer took it before going silent: exactly why it must not go to another provider.
    assert [e["token"] for e in fcm.app.journal.entries] == ["warm-up", "tok"]


async def test_fcm_without_a_token_is_provider_down(
    fcm: Peer, fcm_account: Path, credentials: Path, client: httpx.AsyncClient
) -> None:
    fcm.app.fail_next(503, endpoint="token")
    failed = await failure(fcm_provider(client, fcm, fcm_account), push("tok"))
    assert failed.error_class is ErrorClass.PROVIDER_DOWN
    assert "503" in failed.message

    stranger = write_fcm_service_account(credentials / "stranger", PROJECT, "https://x.invalid/")
    refused = await failure(fcm_provider(client, fcm, stranger), push("tok"))
    assert refused.error_class is ErrorClass.PROVIDER_DOWN
    assert "invalid_grant" in refused.message
    assert fcm.app.requests == 0


async def test_fcm_unreachable_is_provider_down(
    fcm: Peer, fcm_account: Path, client: httpx.AsyncClient
) -> None:
    down = Peer(fcm.app, f"http://127.0.0.1:{unused_port()}")
    provider = fcm_provider(client, down, fcm_account, token_url=f"{fcm.base_url}/token")

    failed = await failure(provider, push("tok"))

    assert failed.error_class is ErrorClass.PROVIDER_DOWN
    assert "cannot connect" in failed.message


# -- APNs ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(credentials: Path) -> SandboxTls:
    return SandboxTls.create(credentials / "tls")


@pytest.fixture(scope="module")
def apns_key(credentials: Path) -> Path:
    return write_apns_key(credentials, KEY_ID)


@pytest.fixture
async def apns(tls: SandboxTls, apns_key: Path) -> AsyncIterator[Peer]:
    app = SandboxApns(topics=[TOPIC])
    app.trust_key(apns_key, key_id=KEY_ID, team_id=TEAM_ID)
    running = await serve_asgi(app, tls=tls)
    yield Peer(app, running.base_url)
    app.release()
    await running.close()


@pytest.fixture
async def apns_provider(apns: Peer, apns_key: Path, tls: SandboxTls) -> AsyncIterator[ApnsProvider]:
    provider = ApnsProvider(
        ApnsTokenSigner.from_file(apns_key, key_id=KEY_ID, team_id=TEAM_ID),
        topic=TOPIC,
        base_url=apns.base_url,
        ca_file=tls.ca_file,
        timeout=TIMEOUT,
    )
    yield provider
    await provider.aclose()


def jwt_parts(authorization: str) -> tuple[dict[str, Any], dict[str, Any]]:
    scheme, _, token = authorization.partition(" ")
    assert scheme == "bearer"
    header, claims, _ = token.split(".")
    return tuple(  # type: ignore[return-value]
        json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        for part in (header, claims)
    )


async def test_apns_delivers_over_http2_with_its_headers_and_provider_token(
    apns: Peer, apns_provider: ApnsProvider
) -> None:
    expires_at = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    notification = push(IOS_TOKEN, data={"order": 42, "tags": ["a"]}, expires_at=expires_at)

    result = await apns_provider.send(notification)

    [seen] = apns.app.seen
    assert seen["http_version"] == "2"
    assert seen["path"] == f"/3/device/{IOS_TOKEN}"
    headers = seen["headers"]
    assert headers["apns-topic"] == TOPIC
    assert headers["apns-push-type"] == "alert"
    assert headers["apns-priority"] == "10"
    assert headers["apns-id"] == notification.id
    assert headers["apns-expiration"] == str(int(expires_at.timestamp()))
    header, claims = jwt_parts(headers["authorization"])
    assert header == {"alg": "ES256", "kid": KEY_ID, "typ": "JWT"}
    assert claims["iss"] == TEAM_ID
    assert abs(claims["iat"] - datetime.now(UTC).timestamp()) < 60
    assert seen["jwt_claims"] == claims  # the peer verified the signature with the public key
    assert json.loads(seen["body"]) == {
        "aps": {"alert": {"title": "Shipped", "body": "Your order is on its way"}},
        "order": 42,
        "tags": ["a"],
    }
    [entry] = apns.app.journal.entries
    assert entry["apns_id"] == notification.id
    assert (entry["token"], entry["topic"], entry["push_type"], entry["priority"]) == (
        IOS_TOKEN,
        TOPIC,
        "alert",
        "10",
    )
    assert entry["data"] == {"order": 42, "tags": ["a"]}
    assert result.provider == "apns"
    # The sandbox is Apple's development environment, which names each push apns-unique-id.
    assert uuid.UUID(result.provider_message_id)
    assert result.provider_message_id != notification.id


async def test_apns_background_and_low_priority_pushes(
    apns: Peer, apns_provider: ApnsProvider
) -> None:
    await apns_provider.send(push(IOS_TOKEN, title="", body="", data={"sync": "inbox"}))
    await apns_provider.send(push(IOS_TOKEN, priority=Priority.LOW))
    await apns_provider.send(push(IOS_TOKEN, priority=Priority.MEDIUM))

    background, low, medium = apns.app.seen
    assert background["headers"]["apns-push-type"] == "background"
    assert background["headers"]["apns-priority"] == "5"
    assert "apns-expiration" not in background["headers"]
    assert json.loads(background["body"]) == {"aps": {"content-available": 1}, "sync": "inbox"}
    assert (low["headers"]["apns-push-type"], low["headers"]["apns-priority"]) == ("alert", "5")
    assert medium["headers"]["apns-priority"] == "10"
    assert len(apns.app.journal.entries) == 3


async def test_apns_reuses_its_provider_token_and_maps_other_ids_to_uuids(
    apns: Peer, apns_provider: ApnsProvider
) -> None:
    for i in range(3):
        await apns_provider.send(push(IOS_TOKEN, id=f"ntf_{i}"))

    assert apns.app.provider_tokens_seen == 1
    ids = [s["headers"]["apns-id"] for s in apns.app.seen]
    assert ids == [apns_id_for(f"ntf_{i}") for i in range(3)]
    assert all(uuid.UUID(i).version == 5 for i in ids)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("unregistered-device", "Unregistered"),
        ("not-a-hex-token", "BadDeviceToken"),
        ("notfortopic-device", "DeviceTokenNotForTopic"),
    ],
)
async def test_apns_dead_tokens_are_permanent_and_gone(
    apns: Peer, apns_provider: ApnsProvider, token: str, reason: str
) -> None:
    failed = await failure(apns_provider, push(token))

    assert failed.error_class is ErrorClass.PERMANENT
    assert failed.rejection is AddressRejection.GONE
    assert reason in failed.message
    assert apns.app.journal.entries == []


async def test_apns_payload_and_topic_errors_are_permanent_and_keep_the_token(
    apns: Peer, apns_provider: ApnsProvider
) -> None:
    too_large = await failure(apns_provider, push(IOS_TOKEN, data={"blob": "x" * 5000}))
    apns.app.fail_next(400, {"reason": "BadTopic"})
    bad_topic = await failure(apns_provider, push(IOS_TOKEN))

    assert (too_large.error_class, too_large.rejection) == (ErrorClass.PERMANENT, None)
    assert "413 PayloadTooLarge" in too_large.message
    assert (bad_topic.error_class, bad_topic.rejection) == (ErrorClass.PERMANENT, None)
    assert "BadTopic" in bad_topic.message


async def test_apns_expired_provider_token_is_replaced_and_the_send_succeeds(
    apns: Peer, apns_provider: ApnsProvider
) -> None:
    await apns_provider.send(push(IOS_TOKEN))
    apns.app.expire_tokens()

    await apns_provider.send(push(IOS_TOKEN))

    first, refused, retried = apns.app.seen
    assert refused["status"] == 403
    assert refused["headers"]["authorization"] == first["headers"]["authorization"]
    assert retried["headers"]["authorization"] != first["headers"]["authorization"]
    assert retried["headers"]["apns-id"] == refused["headers"]["apns-id"]
    assert apns.app.provider_tokens_seen == 2
    assert len(apns.app.journal.entries) == 2


async def test_apns_invalid_provider_token_is_provider_down(
    apns: Peer, credentials: Path, tls: SandboxTls
) -> None:
    foreign_key = write_apns_key(credentials / "foreign", KEY_ID)
    provider = ApnsProvider(
        ApnsTokenSigner.from_file(foreign_key, key_id=KEY_ID, team_id=TEAM_ID),
        topic=TOPIC,
        base_url=apns.base_url,
        ca_file=tls.ca_file,
        timeout=TIMEOUT,
    )
    try:
        failed = await failure(provider, push(IOS_TOKEN))
    finally:
        await provider.aclose()

    assert failed.error_class is ErrorClass.PROVIDER_DOWN
    assert "InvalidProviderToken" in failed.message


async def test_apns_429_is_transient(apns: Peer, apns_provider: ApnsProvider) -> None:
    apns.app.fail_next(429, retry_after=12)

    failed = await failure(apns_provider, push(IOS_TOKEN))

    assert failed.error_class is ErrorClass.TRANSIENT
    assert failed.retry_after == timedelta(seconds=12)
    assert "TooManyRequests" in failed.message


@pytest.mark.parametrize("status", [500, 503])
async def test_apns_5xx_is_provider_down(
    apns: Peer, apns_provider: ApnsProvider, status: int
) -> None:
    apns.app.fail_next(status)

    failed = await failure(apns_provider, push(IOS_TOKEN))

    assert failed.error_class is ErrorClass.PROVIDER_DOWN


async def test_apns_retry_after_an_unanswered_send_is_journalled_once(
    apns: Peer, apns_key: Path, tls: SandboxTls
) -> None:
    provider = ApnsProvider(
        ApnsTokenSigner.from_file(apns_key, key_id=KEY_ID, team_id=TEAM_ID),
        topic=TOPIC,
        base_url=apns.base_url,
        ca_file=tls.ca_file,
        timeout=0.3,
    )
    notification = push(IOS_TOKEN)
    apns.app.hang_next(HANG_SECONDS)
    try:
        failed = await failure(provider, notification)
        result = await provider.send(notification)
    finally:
        await provider.aclose()

    assert failed.error_class is ErrorClass.MAYBE_ACCEPTED
    assert [s["headers"]["apns-id"] for s in apns.app.seen] == [notification.id] * 2
    assert [e["apns_id"] for e in apns.app.journal.entries] == [notification.id]
    assert apns.app.duplicates == 1
    assert result.provider_message_id


async def test_apns_refuses_a_client_that_does_not_speak_http2(
    apns: Peer, apns_key: Path, tls: SandboxTls
) -> None:
    verify = ssl.create_default_context(cafile=str(tls.ca_file))
    async with httpx.AsyncClient(http2=False, verify=verify) as http1:
        provider = ApnsProvider(
            ApnsTokenSigner.from_file(apns_key, key_id=KEY_ID, team_id=TEAM_ID),
            topic=TOPIC,
            base_url=apns.base_url,
            client=http1,
        )
        failed = await failure(provider, push(IOS_TOKEN))

    assert failed.error_class is ErrorClass.PROVIDER_DOWN
    assert [s["http_version"] for s in apns.app.seen] == ["1.1"]
    assert apns.app.journal.entries == []


# -- routing by platform ------------------------------------------------------------------------


class Direct:
    """A channel-level Sender of one provider (the lead's failover chain, minus the chain)."""

    channel = Channel.PUSH

    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    async def send(self, notification: Notification) -> Delivered:
        return Delivered(await self.provider.send(notification))


class Platforms:
    def __init__(self, known: dict[str, DevicePlatform]) -> None:
        self.known = known

    async def platform_of(self, tenant_id: str, user_id: str, token: str) -> DevicePlatform | None:
        return self.known.get(token)


async def test_routing_sends_ios_devices_to_apns_and_the_rest_to_fcm(
    fcm: Peer,
    fcm_account: Path,
    client: httpx.AsyncClient,
    apns: Peer,
    apns_provider: ApnsProvider,
) -> None:
    platforms = Platforms(
        {
            IOS_TOKEN: DevicePlatform.IOS,
            "android-1": DevicePlatform.ANDROID,
            "fcm-token-of-an-ios-app": DevicePlatform.IOS,
        }
    )
    sender = PlatformRoutedSender(
        platforms, ios=Direct(apns_provider), other=Direct(fcm_provider(client, fcm, fcm_account))
    )

    ios = await sender.send(push(IOS_TOKEN))
    android = await sender.send(push("android-1"))
    unknown = await sender.send(push("never-registered"))
    ios_via_fcm = await sender.send(push("fcm-token-of-an-ios-app"))

    assert ios.result.provider == "apns"
    assert [android.result.provider, unknown.result.provider, ios_via_fcm.result.provider] == [
        "fcm"
    ] * 3
    assert [e["token"] for e in apns.app.journal.entries] == [IOS_TOKEN]
    assert [e["token"] for e in fcm.app.journal.entries] == [
        "android-1",
        "never-registered",
        "fcm-token-of-an-ios-app",
    ]


async def test_routing_passes_on_a_gone_token_from_the_devices_own_service(
    apns: Peer, apns_provider: ApnsProvider
) -> None:
    sender = PlatformRoutedSender(
        Platforms({"unregistered-x": DevicePlatform.ANDROID}), ios=Direct(apns_provider), other=None
    )
    with pytest.raises(DeliveryFailed) as no_service:
        await sender.send(push("unregistered-x"))
    # An Android device never goes to APNs, which would call its token bad.
    assert no_service.value.error_class is ErrorClass.PERMANENT
    assert no_service.value.rejection is None
    assert apns.app.requests == 0

    sender = PlatformRoutedSender(Platforms({}), ios=Direct(apns_provider), other=None)
    with pytest.raises(DeliveryFailed) as not_its_own:
        await sender.send(push("unregistered-y"))
    assert not_its_own.value.error_class is ErrorClass.PERMANENT
    assert not_its_own.value.rejection is None
    assert apns.app.requests == 1


# -- dev mode -----------------------------------------------------------------------------------


async def test_dev_sandboxes_take_pushes_from_providers_configured_by_their_settings(
    tmp_path: Path, client: httpx.AsyncClient
) -> None:
    sandboxes = await PushSandboxes.start(tmp_path / "push", journal_dir=tmp_path / "journal")
    s = sandboxes.settings()
    apns = ApnsProvider(
        ApnsTokenSigner.from_file(
            s["apns_key_file"], key_id=s["apns_key_id"], team_id=s["apns_team_id"]
        ),
        topic=s["apns_topic"],
        base_url=s["apns_base_url"],
        ca_file=s["provider_ca_file"],
    )
    try:
        tokens = GoogleServiceAccountTokens.from_file(
            s["fcm_credentials_file"], client, token_url=s["fcm_token_url"]
        )
        fcm = FcmProvider(client, tokens, project_id=tokens.project_id, base_url=s["fcm_base_url"])
        await fcm.send(push("android-dev"))
        await apns.send(push(IOS_TOKEN))
    finally:
        await apns.aclose()
        await sandboxes.close()

    journals = {p.stem: p.read_text().splitlines() for p in (tmp_path / "journal").iterdir()}
    assert [json.loads(line)["token"] for line in journals["fcm"]] == ["android-dev"]
    assert [json.loads(line)["token"] for line in journals["apns"]] == [IOS_TOKEN]
