"""The webhook sandbox (SandboxWebhookSink) served by Hypercorn, driven by the real
WebhookSender: what it checks and records, its magic paths and its scripted failures."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from application.ports.sender import DeliveryFailed
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
from infrastructure.sandbox.http import RunningPeer, serve_asgi
from infrastructure.sandbox.journal import read_journals
from infrastructure.sandbox.webhook_sink import SandboxWebhookSink, signature_verifies
from infrastructure.senders import SsrfGuard, WebhookSender, webhook_headers
from infrastructure.senders.webhook import WebhookHttp

pytestmark = pytest.mark.integration

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZC1zZWNy"
OTHER_SECRET = "whsec_b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldC1vdGhl"
T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


class Secrets:
    def __init__(self, *secrets: str) -> None:
        self.secrets = list(secrets)

    async def secrets_for(self, notification: Notification, now: datetime) -> list[str]:
        return self.secrets


def notification(url: str, id: str = "ntf-1") -> Notification:
    return Notification.accept(
        NewNotification(
            request_id=f"req-{id}",
            user_id="user-7",
            channel=Channel.WEBHOOK,
            priority=Priority.HIGH,
            category="order_shipped",
            content=Content(title="Shipped", body="On its way"),
            address=Address.parse("webhook_url", url),
        ),
        id=id,
        tenant_id="tenant-a",
        caller="svc-orders",
        fingerprint="x",
        now=T0,
    )


@pytest.fixture
async def client() -> AsyncIterator[WebhookHttp]:
    http = WebhookHttp()
    yield http
    await http.aclose()


async def serve(sink: SandboxWebhookSink) -> RunningPeer:
    return await serve_asgi(sink)


@pytest.fixture
async def sink() -> AsyncIterator[tuple[SandboxWebhookSink, str]]:
    app = SandboxWebhookSink([SECRET])
    peer = await serve(app)
    yield app, peer.base_url
    app.release()
    await peer.close()


def sender(client: WebhookHttp, *secrets: str, timeout: float = 5.0) -> WebhookSender:
    return WebhookSender(
        client, Secrets(*(secrets or (SECRET,))), SsrfGuard(allow_private=True), timeout=timeout
    )


async def failure(webhooks: WebhookSender, n: Notification) -> DeliveryFailed:
    with pytest.raises(DeliveryFailed) as caught:
        await webhooks.send(n)
    return caught.value


async def test_a_signed_delivery_is_verified_recorded_and_named(
    sink: tuple[SandboxWebhookSink, str], client: WebhookHttp
) -> None:
    app, base = sink
    n = notification(f"{base}/hooks/orders")
    result = await sender(client).send(n)

    assert result.provider_message_id == "sink-1"
    [entry] = app.entries
    assert entry["peer"] == "webhook"
    assert entry["path"] == "/hooks/orders"
    assert entry["webhook_id"] == n.id
    assert entry["verified"] is True
    assert entry["status"] == 200
    assert entry["body"]["data"]["title"] == "Shipped"
    assert datetime.fromisoformat(entry["at"]).tzinfo is not None


async def test_a_signature_by_another_secret_is_recorded_as_unverified(
    sink: tuple[SandboxWebhookSink, str], client: WebhookHttp
) -> None:
    app, base = sink
    # Dev mode accepts it anyway, so a newcomer sees the delivery and the verdict.
    await sender(client, OTHER_SECRET).send(notification(f"{base}/"))
    assert app.entries[0]["verified"] is False
    assert app.entries[0]["status"] == 200


async def test_either_of_two_signatures_verifies_during_a_rotation(
    client: WebhookHttp,
) -> None:
    for expected in (SECRET, OLD_SECRET):
        app = SandboxWebhookSink([expected], reject_unverified=True)
        peer = await serve(app)
        try:
            await sender(client, SECRET, OLD_SECRET).send(notification(f"{peer.base_url}/"))
        finally:
            await peer.close()
        assert app.entries[0]["verified"] is True
        assert app.entries[0]["signatures"] == 2


async def test_without_expected_secrets_nothing_is_claimed(client: WebhookHttp) -> None:
    app = SandboxWebhookSink()
    peer = await serve(app)
    try:
        await sender(client).send(notification(f"{peer.base_url}/"))
    finally:
        await peer.close()
    assert app.entries[0]["verified"] is None


async def test_per_path_secrets_and_rejecting_what_does_not_verify(
    client: WebhookHttp,
) -> None:
    app = SandboxWebhookSink(
        [SECRET], secrets_by_path={"/b": [OTHER_SECRET]}, reject_unverified=True
    )
    peer = await serve(app)
    try:
        await sender(client).send(notification(f"{peer.base_url}/a", id="n-a"))
        failed = await failure(sender(client), notification(f"{peer.base_url}/b", id="n-b"))
        await sender(client, OTHER_SECRET).send(notification(f"{peer.base_url}/b", id="n-c"))
    finally:
        await peer.close()
    assert failed.error_class is ErrorClass.PERMANENT
    assert "401" in failed.message
    assert [(e["path"], e["verified"], e["status"]) for e in app.entries] == [
        ("/a", True, 200),
        ("/b", False, 401),
        ("/b", True, 200),
    ]


async def test_gone_path_answers_410_and_the_sender_says_the_endpoint_is_gone(
    sink: tuple[SandboxWebhookSink, str], client: WebhookHttp
) -> None:
    app, base = sink
    failed = await failure(sender(client), notification(f"{base}/gone"))
    assert failed.error_class is ErrorClass.PERMANENT
    assert failed.rejection is AddressRejection.GONE
    assert app.entries[0]["status"] == 410


async def test_fail_path_answers_503(
    sink: tuple[SandboxWebhookSink, str], client: WebhookHttp
) -> None:
    _, base = sink
    failed = await failure(sender(client), notification(f"{base}/fail"))
    assert failed.error_class is ErrorClass.TRANSIENT
    assert "503" in failed.message


async def test_fail_next_scripts_answers_then_it_accepts_again(
    sink: tuple[SandboxWebhookSink, str], client: WebhookHttp
) -> None:
    app, base = sink
    app.fail_next(429, times=2, retry_after=7, body='{"error": "slow down"}')
    webhooks = sender(client)
    n = notification(f"{base}/")
    for _ in range(2):
        failed = await failure(webhooks, n)
        assert failed.error_class is ErrorClass.TRANSIENT
        assert failed.retry_after == timedelta(seconds=7)
        assert "slow down" in failed.message
    assert (await webhooks.send(n)).provider_message_id == "sink-1"
    assert [e["status"] for e in app.entries] == [429, 429, 200]


async def test_a_hang_is_maybe_accepted_and_the_retry_is_a_recognised_duplicate(
    sink: tuple[SandboxWebhookSink, str], client: WebhookHttp
) -> None:
    app, base = sink
    app.hang_next()
    n = notification(f"{base}/")
    started = time.monotonic()
    failed = await failure(sender(client, timeout=0.3), n)
    assert failed.error_class is ErrorClass.MAYBE_ACCEPTED
    assert time.monotonic() - started < 2.0
    # The receiver took the message but its answer came too late: the retry, with the same
    # webhook-id, is answered as the message it already has.
    result = await sender(client).send(n)
    assert result.provider_message_id == "sink-1", "the first message id again"
    assert app.entries[-1]["duplicate"] is True
    assert [e["status"] for e in app.entries] == [0, 200]


async def test_only_post_with_a_json_body_and_webhook_headers_is_taken(
    sink: tuple[SandboxWebhookSink, str],
) -> None:
    app, base = sink
    body = b"not json"
    headers = webhook_headers("m-1", int(time.time()), body, SECRET)
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{base}/")).status_code == 405
        assert (await client.post(f"{base}/", content=body, headers=headers)).status_code == 400
        assert (await client.post(f"{base}/", json={"a": 1})).status_code == 400
    assert [e["status"] for e in app.entries] == [400, 400]


async def test_the_journal_is_written_where_notifyd_sandbox_reads_it(
    tmp_path: Path, client: WebhookHttp
) -> None:
    app = SandboxWebhookSink([SECRET], journal_dir=tmp_path)
    peer = await serve(app)
    try:
        await sender(client).send(notification(f"{peer.base_url}/x"))
    finally:
        await peer.close()
    [entry] = read_journals(tmp_path)["webhook"]
    assert (entry["path"], entry["verified"], entry["webhook_id"]) == ("/x", True, "ntf-1")
    assert json.dumps(entry["body"])


def test_signature_checks_agree_with_the_reference_library() -> None:
    body = b'{"a":1}'
    now = int(time.time())
    headers = webhook_headers("m-1", now, body, [SECRET, OLD_SECRET])
    assert Webhook(SECRET).verify(body, headers) == {"a": 1}
    assert signature_verifies(headers, body, [OLD_SECRET], now)
    assert not signature_verifies(headers, body, [OTHER_SECRET], now)
    assert not signature_verifies(headers, body + b" ", [SECRET], now)
    # Outside the tolerance a captured request cannot be replayed.
    assert not signature_verifies(headers, body, [SECRET], now + 301)
    assert signature_verifies(headers, body, ["whsec_***", SECRET], now)
