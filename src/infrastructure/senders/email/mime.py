"""The email a notification becomes: headers that cannot be forged through its content, a
plain-text part, and an HTML alternative when there is one."""

from __future__ import annotations

import email.policy
import re
from datetime import UTC, datetime
from email.headerregistry import Address as MailAddress
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from domain.notification import Notification

# 7bit transfer encodings only (quoted-printable or base64 for anything else), so the message
# passes through relays that do not offer 8BITMIME; CRLF line ends as SMTP wants them.
_POLICY = email.policy.SMTP.clone(cte_type="7bit")
# Line breaks of any kind (str.splitlines' set) and other control characters: in a header
# value a CR or LF would start a new header, so none may reach one.
_HEADER_BREAKS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]+")


class InvalidMailAddress(ValueError):
    """An address that cannot be written into a message or an SMTP envelope."""


def message_id(notification_id: str) -> str:
    """The Message-ID header: the notification id, so every retry carries the same one and the
    relay (or a reader) can tell a repeat."""
    return f"<{notification_id}@notifyd>"


def header_text(value: str) -> str:
    """``value`` on one line: line breaks and control characters become single spaces."""
    return _HEADER_BREAKS.sub(" ", value).strip()


def mailbox(value: str) -> MailAddress:
    """A bare address (``user@example.com``) as a header-safe mailbox; raises
    InvalidMailAddress for anything else, including several addresses in one string and
    non-ASCII local parts (they would need SMTPUTF8)."""
    if value != header_text(value):
        raise InvalidMailAddress(f"{value!r} contains line breaks or control characters")
    try:
        return MailAddress(addr_spec=value)
    except Exception as exc:  # the header parser raises ValueError and its own defect types
        raise InvalidMailAddress(f"{value!r} is not a single email address: {exc}") from exc


def envelope_sender(from_address: str) -> str:
    """The address part of a From value such as ``Notifyd <noreply@example.com>``."""
    if from_address != header_text(from_address):
        raise InvalidMailAddress(f"{from_address!r} contains line breaks or control characters")
    _, address = parseaddr(from_address)
    if "@" not in address:
        raise InvalidMailAddress(f"{from_address!r} has no email address")
    return mailbox(address).addr_spec


def build_message(
    notification: Notification, *, from_address: str, to: str, now: datetime | None = None
) -> EmailMessage:
    """The message for ``notification`` to the mailbox ``to``: text/plain alone, or
    multipart/alternative (text first, HTML second: readers show the last part they can)."""
    content = notification.content
    message = EmailMessage(policy=_POLICY)
    message["From"] = from_address
    message["To"] = mailbox(to)
    message["Subject"] = header_text(content.title)
    message["Date"] = format_datetime(now or datetime.now(UTC))
    message["Message-ID"] = message_id(notification.id)
    message.set_content(content.body, subtype="plain", charset="utf-8")
    if content.html.strip():
        message.add_alternative(content.html, subtype="html", charset="utf-8")
    return message


def smtp_payload(message: EmailMessage) -> bytes:
    """The DATA content: CRLF lines, dot-stuffed (RFC 5321 4.5.2), ending with the lone dot."""
    raw = message.as_bytes(policy=_POLICY)
    if not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", raw) + b".\r\n"
