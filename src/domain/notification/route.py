"""A way to reach the recipient: a channel, its address there, and the content for it."""

from __future__ import annotations

from dataclasses import dataclass

from domain.notification.address import Address
from domain.notification.values import Channel, Content


@dataclass(frozen=True, slots=True)
class Route:
    """One step of a fallback chain. ``address`` is None only for IN_APP (keyed by user)."""

    channel: Channel
    address: Address | None
    content: Content
