"""TwilioProvider and VonageProvider against the sandbox peers that speak their vendors' APIs
(over real HTTP, served by Hypercorn)."""

from __future__ import annotations

import base64
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from application.ports.sender import DeliveryFailed, Provider
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
from infrastructure.sandbox.http import SandboxTls, serve_asgi
from infrastructure.sandbox.journal import read_journals
from infrastructure.sandbox.sms import SandboxTwilio, SandboxVonage, vonage_error_body
from infrastructure.senders.sms import TwilioProvider, VonageProvider

pytestmark = pytest.mark.integration

ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
AUTH_TOKEN = "twilio-token"
API_KEY = "vonage-key"
API_SECRET = "vonage-secret"
SENDER = "+15005550006"
TO = "+447700900123"
NOTIFICATION_ID = "01960c4e-7b1a-7cde-8f00-123456789abc"
INVALID, UNREACHABLE, REGION_OFF, UNSUBSCRIBED = (
    "+15005550001",
    "+15005550002",
    "+15005550003",
    "+15005550004",
)
MESSAGE_ID = {"twilio": re.compile(r"SM[0-9a-f]{32}"), "vonage": re.compile(r"[0-9A-F]{16}")}


@dataclass
class Vendor:
    name: str
    peer: SandboxTwilio | SandboxVonage
    base_url: str
    client: httpx.AsyncClient
    journal_dir: Path

    def request_url(self) -> str:
        if self.name == "twilio":
            return f"{self.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
        return f"{self.base_url}/sms/json"

    def provider(
        self, *, timeout: float = 5.0, secret: str | None = None, base_url: str | None = None
    ) -> Provider:
        url = base_url or self.base_url
        if self.name == "twilio":
            return TwilioProvider(
                self.client,
                base_url=url,
                account_sid=ACCOUNT_SID,
                auth_token=secret or AUTH_TOKEN,
                from_number=SENDER,
                timeout=timeout,
            )
        return VonageProvider(
            self.client,
            base_url=url,
            api_key=API_KEY,
            api_secret=secret or API_SECRET,
            from_number=SENDER,
            timeout=timeout,
        )


def make_peer(name: str, journal_dir: Path) -> SandboxTwilio | SandboxVonage:
    if name == "twilio":
        return SandboxTwilio(ACCOUNT_SID, AUTH_TOKEN, journal_dir=journal_dir)
    return SandboxVonage(API_KEY, API_SECRET, journal_dir=journal_dir)


async def start_vendor(name: str, journal_dir: Path) -> AsyncIterator[Vendor]:
    peer = make_peer(name, journal_dir)
    running = await serve_asgi(peer)
    # follow_redirects=True on purpose: the providers must not follow one whatever the client says.
    async with httpx.AsyncClient(follow_redirects=True) as client:
        yield Vendor(name, peer, running.base_url, client, journal_dir)
    # The client is closed first, so the peer has no kept-alive connection to wait for.
    await running.close()


@pytest.fixture(params=["twilio", "vonage"])
async def vendor(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Vendor]:
    async for v in start_vendor(request.param, tmp_path):
        yield v


@pytest.fixture
async def twilio(tmp_path: Path) -> AsyncIterator[Vendor]:
    async for v in start_vendor("twilio", tmp_path):
        yield v


@pytest.fixture
async def vonage(tmp_path: Path) -> AsyncIterator[Vendor]:
    async for v in start_vendor("vonage", tmp_path):
        yield v


def make_notification(
    to: str = TO, *, title: str = "", body: str = "Your code is 123456"
) -> Notification:
    return Notification.accept(
        NewNotification(
            request_id="req-1",
            user_id="user-7",
            channel=Channel.SMS,
            priority=Priority.HIGH,
            category="otp",
            content=Content(title=title, body=body),
            address=Address.parse("phone", to),
        ),
        id=NOTIFICATION_ID,
        tenant_id="tenant-a",
        caller="svc-auth",
        fingerprint="x",
        now=datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC),
    )


async def failure(provider: Provider, notification: Notification) -> DeliveryFailed:
    with pytest.raises(DeliveryFailed) as caught:
        await provider.send(notification)
    assert caught.value.provider == provider.name
    return caught.value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# -- success ----------------------------------------------------------------------------------


async def test_a_message_is_accepted_and_journalled(vendor: Vendor) -> None:
    provider = vendor.provider()
    assert provider.channel is Channel.SMS

    result = await provider.send(make_notification())

    assert result.provider == vendor.name
    assert MESSAGE_ID[vendor.name].fullmatch(result.provider_message_id)
    [entry] = vendor.peer.journal.entries
    assert entry == {
        "at": entry["at"],
        "to": TO,
        "from": SENDER if vendor.name == "twilio" else SENDER.removeprefix("+"),
        "body": "Your code is 123456",
        "reference": NOTIFICATION_ID,
        "message_id": result.provider_message_id,
        "peer": vendor.name,
    }
    # Written where `notifyd sandbox` reads it.
    assert read_journals(vendor.journal_dir)[vendor.name] == [entry]


async def test_twilio_gets_form_fields_basic_auth_and_the_reference(twilio: Vendor) -> None:
    await twilio.provider().send(make_notification())

    [request] = twilio.peer.requests
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.fields == {"To": TO, "From": SENDER, "Body": "Your code is 123456"}
    credentials = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {credentials}"
    assert request.headers["i-twilio-idempotency-token"] == NOTIFICATION_ID


async def test_vonage_gets_form_fields_without_plus_signs_and_the_client_ref(
    vonage: Vendor,
) -> None:
    await vonage.provider().send(make_notification())

    [request] = vonage.peer.requests
    assert (request.method, request.path) == ("POST", "/sms/json")
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.fields == {
        "api_key": API_KEY,
        "api_secret": API_SECRET,
        "from": "15005550006",
        "to": "447700900123",
        "text": "Your code is 123456",
        "type": "text",
        "client-ref": NOTIFICATION_ID,
    }


async def test_title_and_body_go_on_two_lines(vendor: Vendor) -> None:
    await vendor.provider().send(make_notification(title="Acme", body="Code 42"))
    assert vendor.peer.journal.entries[0]["body"] == "Acme\nCode 42"


async def test_vonage_sends_text_beyond_gsm_as_unicode(vonage: Vendor) -> None:
    await vonage.provider().send(make_notification(body="Shipped ✓"))
    assert vonage.peer.requests[0].fields["type"] == "unicode"
    assert vonage.peer.journal.entries[0]["body"] == "Shipped ✓"


async def test_vonage_takes_the_first_parts_id_for_a_long_text(vonage: Vendor) -> None:
    result = await vonage.provider().send(make_notification(body="x" * 200))
    [request] = vonage.peer.requests
    [entry] = vonage.peer.journal.entries
    assert entry["message_id"] == result.provider_message_id
    assert entry["body"] == "x" * 200
    assert request.fields["text"] == "x" * 200


async def test_https_with_http2_to_a_peer_signed_by_the_sandbox_ca(tmp_path: Path) -> None:
    tls = SandboxTls.create(tmp_path / "tls")
    peer = SandboxTwilio(ACCOUNT_SID, AUTH_TOKEN)
    running = await serve_asgi(peer, tls=tls)
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file))
        async with httpx.AsyncClient(verify=context, http2=True) as client:
            vendor = Vendor("twilio", peer, running.base_url, client, tmp_path)
            result = await vendor.provider().send(make_notification())
    finally:
        await running.close()
    assert running.base_url.startswith("https://")
    assert peer.journal.entries[0]["message_id"] == result.provider_message_id


# -- refusals ---------------------------------------------------------------------------------


async def test_an_invalid_number_is_permanent(vendor: Vendor) -> None:
    failed = await failure(vendor.provider(), make_notification(INVALID))
    assert failed.error_class is ErrorClass.PERMANENT
    assert failed.rejection is None
    assert ("21211" if vendor.name == "twilio" else "status 3") in failed.message
    assert vendor.peer.journal.entries == []


async def test_an_unroutable_number_is_permanent(vendor: Vendor) -> None:
    failed = await failure(vendor.provider(), make_notification(UNREACHABLE))
    assert failed.error_class is ErrorClass.PERMANENT
    assert failed.rejection is None


async def test_an_unsubscribed_number_is_permanent_and_rejected(vendor: Vendor) -> None:
    failed = await failure(vendor.provider(), make_notification(UNSUBSCRIBED))
    assert failed.error_class is ErrorClass.PERMANENT
    assert failed.rejection is AddressRejection.UNSUBSCRIBED
    assert vendor.peer.journal.entries == []


async def test_a_region_our_account_cannot_reach_lets_another_provider_try(
    vendor: Vendor,
) -> None:
    failed = await failure(vendor.provider(), make_notification(REGION_OFF))
    assert failed.error_class is ErrorClass.PROVIDER_DOWN
    assert failed.rejection is None


async def test_429_is_transient_with_retry_after(vendor: Vendor) -> None:
    vendor.peer.fail_next(429, retry_after="7")
    failed = await failure(vendor.provider(), make_notification())
    assert failed.error_class is ErrorClass.TRANSIENT
    assert failed.retry_after == timedelta(seconds=7)
    assert vendor.peer.journal.entries == []
    # Only the next request was refused.
    await vendor.provider().send(make_notification())
    assert len(vendor.peer.journal.entries) == 1


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_is_provider_down(vendor: Vendor, status: int) -> None:
    vendor.peer.fail_next(status)
    failed = await failure(vendor.provider(), make_notification())
    assert failed.error_class is ErrorClass.PROVIDER_DOWN
    assert str(status) in failed.message


@pytest.mark.parametrize("status", [502, 504])
async def test_a_gateway_error_may_hide_an_acceptance(vendor: Vendor, status: int) -> None:
    # The vendor behind the gateway may have taken it: retried there, never failed over.
    vendor.peer.fail_next(status)
    failed = await failure(vendor.provider(), make_notification())
    assert failed.error_class is ErrorClass.MAYBE_ACCEPTED
    assert str(status) in failed.message


async def test_bad_credentials_are_provider_down(vendor: Vendor) -> None:
    failed = await failure(vendor.provider(secret="wrong"), make_notification())
    assert failed.error_class is ErrorClass.PROVIDER_DOWN
    assert vendor.peer.requests_received == 1
    assert vendor.peer.journal.entries == []


async def test_a_redirect_is_not_followed(vendor: Vendor) -> None:
    # To the very URL that would accept it: following the redirect would deliver.
    vendor.peer.fail_next(307, headers={"location": vendor.request_url()})
    failed = await failure(vendor.provider(), make_notification())
    assert failed.error_class is ErrorClass.PROVIDER_DOWN
    assert vendor.peer.requests_received == 1


async def test_other_twilio_4xx_is_permanent(twilio: Vendor) -> None:
    body = {"code": 21602, "message": "Message body is required.", "status": 400}
    twilio.peer.fail_next(400, body)
    failed = await failure(twilio.provider(), make_notification())
    assert failed.error_class is ErrorClass.PERMANENT
    assert "21602" in failed.message


@pytest.mark.parametrize(
    ("status", "error_class", "rejection"),
    [
        ("1", ErrorClass.TRANSIENT, None),
        ("2", ErrorClass.PERMANENT, None),
        ("3", ErrorClass.PERMANENT, None),
        ("4", ErrorClass.PROVIDER_DOWN, None),
        ("5", ErrorClass.PROVIDER_DOWN, None),
        ("6", ErrorClass.PERMANENT, None),
        ("7", ErrorClass.PERMANENT, AddressRejection.UNSUBSCRIBED),
        ("8", ErrorClass.PROVIDER_DOWN, None),
        ("9", ErrorClass.PROVIDER_DOWN, None),
        ("99", ErrorClass.PROVIDER_DOWN, None),
    ],
)
async def test_vonage_statuses(
    vonage: Vendor,
    status: str,
    error_class: ErrorClass,
    rejection: AddressRejection | None,
) -> None:
    vonage.peer.fail_next(200, vonage_error_body(status, "scripted"))
    failed = await failure(vonage.provider(), make_notification())
    assert failed.error_class is error_class
    assert failed.rejection is rejection
    assert f"status {status}" in failed.message


async def test_vonage_refusing_a_later_part_is_not_failed_over(vonage: Vendor) -> None:
    # Part one went out: a failover would send the whole text a second time.
    parts: list[dict[str, Any]] = [
        {"to": "447700900123", "message-id": "0C000000217B7F02", "status": "0"},
        {"to": "447700900123", "status": "9", "error-text": "Quota Exceeded - rejected"},
    ]
    vonage.peer.fail_next(200, {"message-count": "2", "messages": parts})
    failed = await failure(vonage.provider(), make_notification())
    assert failed.error_class is ErrorClass.TRANSIENT


async def test_vonage_200_without_messages_may_have_been_accepted(vonage: Vendor) -> None:
    vonage.peer.fail_next(200, {"unexpected": True})
    failed = await failure(vonage.provider(), make_notification())
    assert failed.error_class is ErrorClass.MAYBE_ACCEPTED


# -- lost answers and unreachable providers ---------------------------------------------------


async def test_a_hang_is_maybe_accepted_and_the_retry_is_not_journalled_twice(
    vendor: Vendor,
) -> None:
    provider = vendor.provider(timeout=0.5)
    vendor.peer.hang_next(5)
    started = time.monotonic()
    failed = await failure(provider, make_notification())
    assert failed.error_class is ErrorClass.MAYBE_ACCEPTED
    assert time.monotonic() - started < 2.0
    # The peer took it; only the answer was lost.
    [entry] = vendor.peer.journal.entries

    result = await provider.send(make_notification())

    assert result.provider_message_id == entry["message_id"]
    assert vendor.peer.requests_received == 2
    assert len(vendor.peer.journal.entries) == 1


async def test_connection_refused_is_provider_down(vendor: Vendor) -> None:
    provider = vendor.provider(base_url=f"http://127.0.0.1:{free_port()}")
    failed = await failure(provider, make_notification())
    assert failed.error_class is ErrorClass.PROVIDER_DOWN


# -- what never reaches the provider ----------------------------------------------------------


async def test_a_non_phone_address_is_permanent(vendor: Vendor) -> None:
    notification = make_notification()
    notification.address = Address.parse("email", "someone@example.com")
    failed = await failure(vendor.provider(), notification)
    assert failed.error_class is ErrorClass.PERMANENT
    assert "email" in failed.message
    assert vendor.peer.requests_received == 0


async def test_an_empty_text_is_permanent(vendor: Vendor) -> None:
    notification = make_notification()
    # Content an SMS cannot carry (only push data), as a template for another channel renders.
    notification.content = Content(title="", body="", data={"badge": 1})
    failed = await failure(vendor.provider(), notification)
    assert failed.error_class is ErrorClass.PERMANENT
    assert vendor.peer.requests_received == 0


# -- the sandboxes on their own ---------------------------------------------------------------


async def test_the_twilio_sandbox_checks_fields_paths_and_numbers(twilio: Vendor) -> None:
    url = twilio.request_url()
    auth = (ACCOUNT_SID, AUTH_TOKEN)
    post = twilio.client.post

    missing = await post(url, data={"To": TO, "From": SENDER}, auth=auth)
    bad_to = await post(url, data={"To": "0044", "From": SENDER, "Body": "x"}, auth=auth)
    other_account = await post(url.replace(ACCOUNT_SID, "AC" + "f" * 32), auth=auth)
    no_auth = await post(url, data={"To": TO, "From": SENDER, "Body": "x"})
    wrong_path = await post(f"{twilio.base_url}/2010-04-01/Messages.json", auth=auth)

    assert (missing.status_code, missing.json()["code"]) == (400, 21602)
    assert (bad_to.status_code, bad_to.json()["code"]) == (400, 21211)
    assert (other_account.status_code, other_account.json()["code"]) == (401, 20003)
    assert (no_auth.status_code, no_auth.json()["code"]) == (401, 20003)
    assert (wrong_path.status_code, wrong_path.json()["code"]) == (404, 20404)
    assert twilio.peer.journal.entries == []


async def test_the_twilio_sandbox_answers_with_a_message_resource(twilio: Vendor) -> None:
    url = twilio.request_url()
    response = await twilio.client.post(
        url, data={"To": TO, "From": SENDER, "Body": "hi"}, auth=(ACCOUNT_SID, AUTH_TOKEN)
    )
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "queued"
    assert (body["to"], body["from"], body["body"]) == (TO, SENDER, "hi")
    assert body["uri"] == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{body['sid']}.json"
    # Without an idempotency token every request is a new message.
    await twilio.client.post(
        url, data={"To": TO, "From": SENDER, "Body": "hi"}, auth=(ACCOUNT_SID, AUTH_TOKEN)
    )
    assert len(twilio.peer.journal.entries) == 2


async def test_the_vonage_sandbox_takes_json_and_checks_fields(vonage: Vendor) -> None:
    url = vonage.request_url()
    creds = {"api_key": API_KEY, "api_secret": API_SECRET}

    ok = await vonage.client.post(
        url, json={**creds, "from": "Acme", "to": "447700900123", "text": "hi"}
    )
    missing = await vonage.client.post(url, json={**creds, "from": "Acme", "to": "447700900123"})
    plus = await vonage.client.post(
        url, json={**creds, "from": "Acme", "to": "+447700900123", "text": "hi"}
    )
    long = await vonage.client.post(
        url, json={**creds, "from": "Acme", "to": "447700900124", "text": "y" * 200}
    )

    assert ok.status_code == 200
    [message] = ok.json()["messages"]
    assert message["status"] == "0"
    assert message["to"] == "447700900123"
    assert missing.json()["messages"][0] == {"status": "2", "error-text": "Missing text param"}
    assert plus.json()["messages"][0]["status"] == "3"
    # 200 GSM characters take two parts, each with its own id; the journal names the first.
    assert long.json()["message-count"] == "2"
    first, second = long.json()["messages"]
    assert first["message-id"] != second["message-id"]
    short_entry, long_entry = vonage.peer.journal.entries
    assert (short_entry["to"], short_entry["from"], short_entry["reference"]) == (
        "+447700900123",
        "Acme",
        "",
    )
    assert long_entry["message_id"] == first["message-id"]
