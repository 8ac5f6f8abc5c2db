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
from domain.notification.engagement import REPORT_CLOCK_SKEW, EngagementAction
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
from domain.notification.status import (
    CANCELLABLE,
    PROVIDER_ACCEPTED,
    SETTLED,
    TERMINAL,
    TRANSITIONS,
    UNSENT,
    Status,
    can_transition,
)
from domain.notification.values import Channel, Content, Priority, Rendered, TemplateRef

__all__ = [
    "ADDRESS_KIND_BY_CHANNEL",
    "CANCELLABLE",
    "ERASED_REASON",
    "MAX_REQUEST_ID_CHARS",
    "PROVIDER_ACCEPTED",
    "REPORT_CLOCK_SKEW",
    "SETTLED",
    "TERMINAL",
    "TRANSITIONS",
    "UNSENT",
    "Address",
    "AddressRejection",
    "AttemptOutcome",
    "Channel",
    "Content",
    "Decision",
    "DeliveryAttempt",
    "DeliveryResult",
    "EngagementAction",
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
