"""IN_APP: the notification row is the inbox entry, so acceptance is delivery."""

from __future__ import annotations

from domain.notification import Channel, DeliveryResult, Notification


class InAppSender:
    name = "inbox"
    channel = Channel.IN_APP

    async def send(self, notification: Notification) -> DeliveryResult:
        # Status DELIVERED (written by the use case) is what puts it in the unread count.
        return DeliveryResult(provider="inbox", provider_message_id=notification.id, delivered=True)
