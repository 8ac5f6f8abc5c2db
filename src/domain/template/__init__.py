"""Templates: versioned, localized, per-channel content and the variables it declares."""

from domain.template.content import (
    CHANNEL_FIELDS,
    ChannelContent,
    EmailContent,
    InAppContent,
    LocalizedContent,
    PushContent,
    SmsContent,
    Source,
    TemplateVersionContent,
    VariableDeclaration,
    VariableType,
    WebhookContent,
)
from domain.template.template import Template, TemplateVersion, VersionState
from domain.template.validation import MAX_SOURCE_BYTES, MAX_VERSION_BYTES, check_content
from domain.template.variables import checked_values

__all__ = [
    "CHANNEL_FIELDS",
    "MAX_SOURCE_BYTES",
    "MAX_VERSION_BYTES",
    "ChannelContent",
    "EmailContent",
    "InAppContent",
    "LocalizedContent",
    "PushContent",
    "SmsContent",
    "Source",
    "Template",
    "TemplateVersion",
    "TemplateVersionContent",
    "VariableDeclaration",
    "VariableType",
    "VersionState",
    "WebhookContent",
    "check_content",
    "checked_values",
]
