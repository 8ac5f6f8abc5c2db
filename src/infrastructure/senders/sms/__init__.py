"""The SMS channel's providers: Twilio's Messages API and the Vonage SMS API."""

from infrastructure.senders.sms.common import Refusal, sms_text
from infrastructure.senders.sms.twilio import TWILIO_ERRORS, TwilioProvider
from infrastructure.senders.sms.vonage import VONAGE_STATUSES, VonageProvider

__all__ = [
    "TWILIO_ERRORS",
    "VONAGE_STATUSES",
    "Refusal",
    "TwilioProvider",
    "VonageProvider",
    "sms_text",
]
