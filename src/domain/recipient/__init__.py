"""The Recipient aggregate: contact data and preferences of one user of a tenant."""

from domain.recipient.preferences import (
    ANY_CATEGORY,
    CategoryCap,
    ChannelPreference,
    Preferences,
)
from domain.recipient.quiet_hours import QuietHours
from domain.recipient.recipient import (
    DevicePlatform,
    Profile,
    PushDevice,
    Recipient,
    WebhookEndpoint,
)

__all__ = [
    "ANY_CATEGORY",
    "CategoryCap",
    "ChannelPreference",
    "DevicePlatform",
    "Preferences",
    "Profile",
    "PushDevice",
    "QuietHours",
    "Recipient",
    "WebhookEndpoint",
]
