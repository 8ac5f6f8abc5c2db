"""Standard Webhooks signing, checked against the reference library and the published example."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from infrastructure.senders.standard_webhooks import (
    decode_secret,
    webhook_headers,
    webhook_signature,
)

# The example from the Standard Webhooks / Svix documentation.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

OTHER_SECRET = "whsec_" + base64.b64encode(b"another-secret-of-32-bytes-long!").decode()


def test_matches_the_published_example() -> None:
    assert webhook_signature(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, SPEC_SECRET) == SPEC_SIGNATURE


def test_matches_the_reference_library() -> None:
    body = '{"type":"order_shipped","data":{"title":"Ünïcode ✓"}}'
    at = datetime.fromtimestamp(1_700_000_000, tz=UTC)
    expected = Webhook(OTHER_SECRET).sign("n-1", at, body)
    assert webhook_signature("n-1", 1_700_000_000, body.encode(), OTHER_SECRET) == expected


def test_headers_verify_with_the_reference_library() -> None:
    body = b'{"a":1}'
    headers = webhook_headers("n-42", int(time.time()), body, SPEC_SECRET)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == "n-42"
    assert Webhook(SPEC_SECRET).verify(body, headers) == {"a": 1}


def test_tampered_body_does_not_verify() -> None:
    headers = webhook_headers("n-42", int(time.time()), b'{"a":1}', SPEC_SECRET)
    with pytest.raises(WebhookVerificationError):
        Webhook(SPEC_SECRET).verify(b'{"a":2}', headers)


def test_several_secrets_give_one_entry_each_and_each_verifies() -> None:
    body = b'{"a":1}'
    headers = webhook_headers("n-1", int(time.time()), body, [SPEC_SECRET, OTHER_SECRET])
    entries = headers["webhook-signature"].split(" ")
    assert len(entries) == 2
    assert all(entry.startswith("v1,") for entry in entries)
    # Either side of a rotation accepts the delivery.
    Webhook(SPEC_SECRET).verify(body, headers)
    Webhook(OTHER_SECRET).verify(body, headers)


def test_a_single_string_is_one_secret_not_a_sequence_of_characters() -> None:
    signature = webhook_signature(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, SPEC_SECRET)
    assert signature.count("v1,") == 1


def test_secret_prefix_and_padding_are_optional() -> None:
    raw = b"0123456789abcdef0123456789"  # 26 bytes: its base64 ends in padding
    padded = base64.b64encode(raw).decode()
    assert padded.endswith("=")
    assert decode_secret("whsec_" + padded) == raw
    assert decode_secret("whsec_" + padded.rstrip("=")) == raw
    assert decode_secret(padded) == raw


@pytest.mark.parametrize("secret", ["whsec_", "whsec_not base64!", "whsec_a"])
def test_unusable_secrets_are_rejected(secret: str) -> None:
    with pytest.raises(ValueError, match="secret"):
        decode_secret(secret)


def test_signing_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="at least one"):
        webhook_signature("n-1", 1, b"{}", [])
