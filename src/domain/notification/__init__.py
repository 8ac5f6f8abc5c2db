"""The Notification aggregate and its value objects."""

from domain.notification.address import ADDRESS_KIND_BY_CHANNEL, Address
from domain.notification.attempt import (
    AddressRejection,
    AttemptOutcome,
    DeliveryAttempt,
    DeliveryResult,
    ErrorClass,
)
from domain.notification.decision import Decision, Verdict
from domain.notification.notification import (
    ERASED_REASON,
    MAX_REQUEST_ID_CHARS,
    NewNotification,
    Notification,
    StatusChange,
    validate_new,
)
from domain.notification.retry_policy import RetryPolicy
from domain.notification.route import Route
from domain.notification.status import SETTLED, TERMINAL, TRANSITIONS, Status, can_transition
from domain.notification.values import Channel, Content, Priority, Rendered, TemplateRef

__all__ = [
    "ADDRESS_KIND_BY_CHANNEL",
    "ERASED_REASON",
    "MAX_REQUEST_ID_CHARS",
    "SETTLED",
    "TERMINAL",
    "TRANSITIONS",
    "Address",
    "AddressRejection",
    "AttemptOutcome",
    "Channel",
    "Content",
    "Decision",
    "DeliveryAttempt",
    "DeliveryResult",
    "ErrorClass",
    "NewNotification",
    "Notification",
    "Priority",
    "Rendered",
    "RetryPolicy",
    "Route",
    "Status",
    "StatusChange",
    "TemplateRef",
    "Verdict",
    "can_transition",
    "validate_new",
]
