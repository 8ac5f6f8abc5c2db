"""The PUSH channel: FCM HTTP v1 and APNs (HTTP/2) providers, and routing between them by the
device's platform."""

from infrastructure.senders.push.apns import (
    ApnsProvider,
    ApnsTokenSigner,
    apns_id_for,
    apns_payload,
    load_apns_key,
)
from infrastructure.senders.push.fcm import FcmError, FcmProvider, fcm_message
from infrastructure.senders.push.google_oauth import (
    FCM_SCOPE,
    GoogleServiceAccountTokens,
    ServiceAccount,
    TokenUnavailable,
)
from infrastructure.senders.push.routing import (
    DevicePlatforms,
    PlatformLookup,
    PlatformRoutedSender,
)

__all__ = [
    "FCM_SCOPE",
    "ApnsProvider",
    "ApnsTokenSigner",
    "DevicePlatforms",
    "FcmError",
    "FcmProvider",
    "GoogleServiceAccountTokens",
    "PlatformLookup",
    "PlatformRoutedSender",
    "ServiceAccount",
    "TokenUnavailable",
    "apns_id_for",
    "apns_payload",
    "fcm_message",
    "load_apns_key",
]
