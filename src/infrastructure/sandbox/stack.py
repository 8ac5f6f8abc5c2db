"""Every sandbox peer at once, and the settings that point notifyd's providers at them: what
`notifyd dev` (and `NOTIFYD_SANDBOX=true`) starts so a newcomer sees real deliveries."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infrastructure.sandbox.http import RunningPeer, SandboxTls, serve_asgi
from infrastructure.sandbox.push import PushSandboxes
from infrastructure.sandbox.sms import (
    SANDBOX_TWILIO_ACCOUNT_SID,
    SANDBOX_TWILIO_AUTH_TOKEN,
    SANDBOX_VONAGE_API_KEY,
    SANDBOX_VONAGE_API_SECRET,
    SandboxTwilio,
    SandboxVonage,
)
from infrastructure.sandbox.smtp import SandboxSmtp
from infrastructure.sandbox.webhook_sink import SandboxWebhookSink

SANDBOX_FROM_EMAIL = "notifyd@sandbox.test"
SANDBOX_FROM_NUMBER = "+15005550006"


@dataclass
class SandboxStack:
    directory: Path
    journal_dir: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    # Where the webhook sink listens: send WEBHOOK notifications here (e.g. <url>/orders).
    webhook_url: str = ""
    webhook_sink: SandboxWebhookSink | None = None
    peers: dict[str, str] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def sandbox_stack(directory: Path) -> AsyncIterator[SandboxStack]:
    """Start every peer in this event loop; stop them when the block ends. Received messages
    are journalled as ``directory/<peer>.jsonl`` (`notifyd sandbox` prints them)."""
    journal_dir = directory
    journal_dir.mkdir(parents=True, exist_ok=True)
    tls = SandboxTls.create(directory / "tls")
    async with contextlib.AsyncExitStack() as stack:
        smtp = await SandboxSmtp(directory=journal_dir).start()
        stack.push_async_callback(smtp.stop)
        twilio_peer = await _serve(stack, SandboxTwilio(journal_dir=journal_dir))
        vonage_peer = await _serve(stack, SandboxVonage(journal_dir=journal_dir))
        push = await PushSandboxes.start(directory / "push", journal_dir=journal_dir, tls=tls)
        stack.push_async_callback(push.close)
        sink = SandboxWebhookSink(journal_dir=journal_dir)
        sink_peer = await _serve(stack, sink)
        overrides: dict[str, Any] = {
            "smtp_urls": smtp.url,
            "smtp_starttls": smtp.starttls,
            "smtp_from": SANDBOX_FROM_EMAIL,
            "sms_providers": "twilio,vonage",
            "twilio_base_url": twilio_peer.base_url,
            "twilio_account_sid": SANDBOX_TWILIO_ACCOUNT_SID,
            "twilio_auth_token": SANDBOX_TWILIO_AUTH_TOKEN,
            "twilio_from": SANDBOX_FROM_NUMBER,
            "vonage_base_url": vonage_peer.base_url,
            "vonage_api_key": SANDBOX_VONAGE_API_KEY,
            "vonage_api_secret": SANDBOX_VONAGE_API_SECRET,
            "vonage_from": SANDBOX_FROM_NUMBER,
            **push.settings(),
            "sandbox_dir": str(journal_dir),
        }
        yield SandboxStack(
            directory=directory,
            journal_dir=journal_dir,
            overrides=overrides,
            webhook_url=sink_peer.base_url,
            webhook_sink=sink,
            peers={
                "smtp": smtp.url,
                "twilio": twilio_peer.base_url,
                "vonage": vonage_peer.base_url,
                "fcm": push.fcm_peer.base_url,
                "apns": push.apns_peer.base_url,
                "webhook": sink_peer.base_url,
            },
        )


async def _serve(stack: contextlib.AsyncExitStack, app: Any) -> RunningPeer:
    peer = await serve_asgi(app)
    stack.push_async_callback(peer.close)
    return peer
