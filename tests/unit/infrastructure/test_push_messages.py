"""What the push providers put on the wire, and when the APNs provider token is renewed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from domain.notification import (
    Address,
    Channel,
    Content,
    NewNotification,
    Notification,
    Priority,
)
from infrastructure.senders.push import ApnsTokenSigner, apns_id_for, apns_payload, fcm_message

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def push(
    *,
    title: str = "Hi",
    body: str = "there",
    data: dict[str, Any] | None = None,
    priority: Priority = Priority.MEDIUM,
    expires_at: datetime | None = None,
) -> Notification:
    return Notification.accept(
        NewNotification(
            request_id="r-1",
            user_id="u1",
            channel=Channel.PUSH,
            priority=priority,
            category="test",
            content=Content(title, body, data=data or {}),
            address=Address("device_token", "tok"),
            expires_at=expires_at,
        ),
        id="n-1",
        tenant_id="tenant-a",
        caller="tests",
        fingerprint="fp",
        now=NOW,
    )


def test_apns_id_is_the_notification_id_when_it_is_a_canonical_uuid() -> None:
    v7 = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
    assert apns_id_for(v7) == v7
    assert apns_id_for(v7.upper()) == v7


def test_apns_id_of_any_other_id_is_a_stable_uuid5() -> None:
    made = apns_id_for("ntf_01HXYZ")
    assert uuid.UUID(made).version == 5
    assert apns_id_for("ntf_01HXYZ") == made
    assert apns_id_for("ntf_01HXYZ2") != made
    # Not canonical (no hyphens), though uuid.UUID would parse it.
    hex_only = uuid.uuid4().hex
    assert apns_id_for(hex_only) != str(uuid.UUID(hex_only))


def test_apns_payload_keeps_aps_for_apple() -> None:
    payload = apns_payload(push(title="", body="b", data={"aps": {"badge": 9}, "k": 1}))
    assert payload == {"aps": {"alert": {"body": "b"}}, "k": 1}


def test_fcm_message_strings_its_data_and_maps_priority_and_ttl() -> None:
    message = fcm_message(
        push(
            data={"n": 1, "s": "x", "nested": {"b": [1, None]}},
            priority=Priority.CRITICAL,
            expires_at=NOW + timedelta(minutes=10),
        ),
        now=NOW,
    )
    assert message["token"] == "tok"
    assert message["notification"] == {"title": "Hi", "body": "there"}
    assert message["data"] == {"n": "1", "s": "x", "nested": '{"b":[1,null]}'}
    assert message["android"] == {"priority": "HIGH", "ttl": "600s"}
    assert message["apns"]["headers"]["apns-priority"] == "10"
    assert message["apns"]["headers"]["apns-expiration"] == str(int(NOW.timestamp()) + 600)


def test_fcm_message_without_expiry_or_urgency() -> None:
    message = fcm_message(push(priority=Priority.MEDIUM), now=NOW)
    assert message["android"] == {"priority": "NORMAL"}
    assert "apns-expiration" not in message["apns"]["headers"]


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_apns_provider_token_lives_fifty_minutes() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    clock = Clock()
    signer = ApnsTokenSigner(key, key_id="KEY", team_id="TEAM", wall_clock=clock, monotonic=clock)

    first = signer.token()
    clock.now += 49 * 60
    assert signer.token() == first
    clock.now += 60
    renewed = signer.token()

    assert renewed != first
    assert signer.minted == 2
    claims = jwt.decode(renewed, key.public_key(), algorithms=["ES256"])
    assert claims == {"iss": "TEAM", "iat": int(clock.now)}
    assert jwt.get_unverified_header(renewed)["kid"] == "KEY"


def test_refreshing_a_replaced_provider_token_mints_no_other() -> None:
    signer = ApnsTokenSigner(
        ec.generate_private_key(ec.SECP256R1()), key_id="KEY", team_id="TEAM", wall_clock=Clock()
    )
    stale = signer.token()

    fresh = signer.refresh(stale)

    assert fresh != stale
    assert signer.refresh(stale) == fresh
    assert signer.minted == 2
