"""Channel senders: hand a notification to a provider and say how it went."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

from domain.notification import Channel, DeliveryResult, ErrorClass, Notification


class DeliveryFailed(Exception):
    """The provider did not accept the notification. ``error_class`` decides what happens next."""

    def __init__(
        self,
        error_class: ErrorClass,
        message: str,
        *,
        provider: str,
        retry_after: timedelta | None = None,
    ) -> None:
        self.error_class = error_class
        self.message = message
        self.provider = provider
        self.retry_after = retry_after
        super().__init__(f"{provider}: {error_class}: {message}")


class Sender(Protocol):
    channel: Channel

    async def send(self, notification: Notification) -> DeliveryResult:
        """Deliver, or raise DeliveryFailed. Must be safe to call again for the same
        notification (same id, same idempotency reference at the provider)."""
        ...
