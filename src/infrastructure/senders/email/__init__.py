"""The EMAIL channel: SMTP relays, and the message a notification becomes."""

from infrastructure.senders.email.mime import (
    InvalidMailAddress,
    build_message,
    header_text,
    message_id,
)
from infrastructure.senders.email.smtp import SmtpProvider, SmtpSecurity

__all__ = [
    "InvalidMailAddress",
    "SmtpProvider",
    "SmtpSecurity",
    "build_message",
    "header_text",
    "message_id",
]
