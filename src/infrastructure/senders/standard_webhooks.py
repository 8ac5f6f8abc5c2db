"""Standard Webhooks signing (https://www.standardwebhooks.com), symmetric ``v1`` scheme.

The receiver recomputes HMAC-SHA256 over ``{id}.{timestamp}.{body}`` with the shared secret and
compares it with each entry of ``webhook-signature``. Several secrets yield several entries, so a
secret can be rotated without a window in which receivers reject deliveries.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"


def decode_secret(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_<base64>`` secret (the prefix is optional)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        # Some issuers drop the base64 padding; the reference libraries accept that too.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"webhook secret is not base64 after the {SECRET_PREFIX} prefix") from exc
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def webhook_signature(
    msg_id: str, timestamp: int, body: bytes, secrets: str | Sequence[str]
) -> str:
    """The ``webhook-signature`` value: one space-separated ``v1,<base64>`` entry per secret."""
    # A bare str is itself a Sequence[str]; without this it would be signed once per character.
    keys = [decode_secret(s) for s in ((secrets,) if isinstance(secrets, str) else secrets)]
    if not keys:
        raise ValueError("at least one webhook secret is needed to sign")
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")
        for key in keys
    )


def webhook_headers(
    msg_id: str, timestamp: int, body: bytes, secrets: str | Sequence[str]
) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body`` sent as message ``msg_id`` at ``timestamp``
    (integer Unix seconds)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": webhook_signature(msg_id, timestamp, body, secrets),
    }
