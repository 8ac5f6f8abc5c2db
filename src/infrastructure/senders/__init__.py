"""Channel sender adapters: implementations of application.ports.sender.Sender."""

from infrastructure.senders.http_failures import parse_retry_after
from infrastructure.senders.ssrf import (
    HostUnresolvable,
    Resolver,
    SsrfGuard,
    SsrfRefused,
    system_resolver,
)
from infrastructure.senders.standard_webhooks import (
    decode_secret,
    webhook_headers,
    webhook_signature,
)
from infrastructure.senders.webhook import (
    WebhookSecrets,
    WebhookSender,
    webhook_body,
)

__all__ = [
    "HostUnresolvable",
    "Resolver",
    "SsrfGuard",
    "SsrfRefused",
    "WebhookSecrets",
    "WebhookSender",
    "decode_secret",
    "parse_retry_after",
    "system_resolver",
    "webhook_body",
    "webhook_headers",
    "webhook_signature",
]
