"""What a recipient did with a notification once a provider had accepted it."""

from __future__ import annotations

import enum
from datetime import timedelta

# Reports come from other machines (apps, mail pixels): their clocks may be off by this much
# either way, so a time a little in the future, or a little before the notification was
# created, is taken as reported.
REPORT_CLOCK_SKEW = timedelta(minutes=1)


class EngagementAction(enum.StrEnum):
    # A delivery receipt: it reached the device or mailbox.
    DELIVERED = "DELIVERED"
    OPENED = "OPENED"
    CLICKED = "CLICKED"
    # Dismissed unread: recorded, but it says nothing about delivery or reading.
    DISMISSED = "DISMISSED"
