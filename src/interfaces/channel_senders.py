"""Building each channel's way out from the settings: its providers, in the configured order,
behind the shared circuit breakers and rate limits. A channel whose providers are not
configured is left out, and sends on it are FAILED_PRECONDITION (CHANNEL_NOT_CONFIGURED)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

import httpx
import redis.asyncio as aioredis

from application.failover import FailoverSender
from application.ports.clock import Clock
from application.ports.repositories import UnitOfWorkFactory
from application.ports.sender import CircuitBreaker, Provider, Sender
from domain.notification import Channel
from infrastructure.config import ConfigError, Settings
from infrastructure.resilience.redis_breaker import RedisCircuitBreaker
from infrastructure.resilience.redis_rate_limiter import RedisRateLimiter
from infrastructure.senders.email.smtp import SmtpProvider
from infrastructure.senders.in_app import InAppSender
from infrastructure.senders.push import (
    ApnsProvider,
    ApnsTokenSigner,
    DevicePlatforms,
    FcmProvider,
    GoogleServiceAccountTokens,
    PlatformRoutedSender,
)
from infrastructure.senders.sms import TwilioProvider, VonageProvider
from infrastructure.senders.webhook import WebhookSender
from infrastructure.telemetry.tracing import Tracing

log = logging.getLogger(__name__)


class ChannelSenders:
    """The senders by channel, and what must be closed at shutdown (pooled connections).
    ``guarded`` names the providers behind ``breaker``, ``unguarded`` those without one (for
    the breaker gauges)."""

    def __init__(
        self,
        senders: dict[Channel, Sender],
        closers: Sequence[Callable[[], Awaitable[None]]],
        *,
        breaker: CircuitBreaker | None = None,
        guarded: Sequence[str] = (),
        unguarded: Sequence[str] = (),
    ) -> None:
        self.senders = senders
        self._closers = closers
        self.breaker = breaker
        self.guarded = tuple(guarded)
        self.unguarded = tuple(unguarded)

    @property
    def channels(self) -> frozenset[Channel]:
        return frozenset(self.senders)

    async def close(self) -> None:
        for close in self._closers:
            try:
                await close()
            except Exception:
                log.warning("closing a provider failed", exc_info=True)


def provider_http_client(settings: Settings) -> httpx.AsyncClient:
    """For provider APIs (not tenants' webhooks): trusts the system CAs plus
    ``provider_ca_file`` (a sandbox's own CA), follows no redirects."""
    verify: ssl.SSLContext | bool = True
    if settings.provider_ca_file:
        verify = ssl.create_default_context()
        verify.load_verify_locations(settings.provider_ca_file)
    return httpx.AsyncClient(
        verify=verify,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
    )


def build_channel_senders(
    settings: Settings,
    *,
    webhook: WebhookSender,
    redis: aioredis.Redis,
    uow: UnitOfWorkFactory,
    clock: Clock,
    tracing: Tracing | None = None,
) -> ChannelSenders:
    cooldown = timedelta(seconds=settings.breaker_cooldown_seconds)
    breaker = RedisCircuitBreaker(
        redis,
        namespace=settings.redis_namespace,
        failure_threshold=settings.breaker_failures,
        window=timedelta(seconds=settings.breaker_window_seconds),
        cooldown=cooldown,
    )
    limiter = RedisRateLimiter(
        redis, settings.rate_limit_per_second(), namespace=settings.redis_namespace
    )

    guarded: list[str] = []
    # With tracing on, each provider request gets a CLIENT span.
    traced: Callable[[Sequence[Provider]], list[Provider]] = (
        tracing.traced_providers if tracing is not None else list
    )

    def chain(channel: Channel, providers: Sequence[Provider]) -> Sender:
        guarded.extend(p.name for p in providers)
        return FailoverSender(
            channel,
            traced(providers),
            clock=clock,
            breaker=breaker,
            limiter=limiter,
            breaker_cooldown=cooldown,
        )

    # A webhook's "provider" is each tenant's own endpoint: one dead receiver must not open a
    # breaker that all tenants share, so webhooks and the inbox go without one.
    unguarded = (
        FailoverSender(Channel.WEBHOOK, traced([webhook]), clock=clock),
        FailoverSender(Channel.IN_APP, traced([InAppSender()]), clock=clock),
    )
    senders: dict[Channel, Sender] = {s.channel: s for s in unguarded}
    closers: list[Callable[[], Awaitable[None]]] = []
    timeout = settings.provider_timeout_seconds
    http = provider_http_client(settings)
    closers.append(http.aclose)

    smtp = _smtp_providers(settings)
    if smtp:
        senders[Channel.EMAIL] = chain(Channel.EMAIL, smtp)
        closers.extend(p.close for p in smtp)

    sms = _sms_providers(settings, http)
    if sms:
        senders[Channel.SMS] = chain(Channel.SMS, sms)

    fcm: Sender | None = None
    apns: Sender | None = None
    if settings.fcm_credentials_file:
        try:
            tokens = GoogleServiceAccountTokens.from_file(
                settings.fcm_credentials_file,
                http,
                token_url=settings.fcm_token_url,
                timeout=timeout,
            )
        except ValueError as error:
            raise ConfigError(f"NOTIFYD_FCM_CREDENTIALS_FILE: {error}") from error
        provider = FcmProvider(
            http,
            tokens,
            project_id=tokens.project_id,
            base_url=settings.fcm_base_url,
            timeout=timeout,
        )
        fcm = chain(Channel.PUSH, [provider])
    if settings.apns_key_file:
        _require(settings, "apns_key_id", "apns_team_id", "apns_topic")
        try:
            signer = ApnsTokenSigner.from_file(
                settings.apns_key_file, key_id=settings.apns_key_id, team_id=settings.apns_team_id
            )
        except ValueError as error:
            raise ConfigError(f"NOTIFYD_APNS_KEY_FILE: {error}") from error
        apns_provider = ApnsProvider(
            signer,
            topic=settings.apns_topic,
            base_url=settings.apns_base_url,
            ca_file=settings.provider_ca_file,
            timeout=timeout,
        )
        closers.append(apns_provider.aclose)
        apns = chain(Channel.PUSH, [apns_provider])
    if fcm is not None or apns is not None:
        senders[Channel.PUSH] = PlatformRoutedSender(DevicePlatforms(uow), ios=apns, other=fcm)
    return ChannelSenders(
        senders,
        closers,
        breaker=breaker,
        guarded=guarded,
        unguarded=[name for s in unguarded for name in s.provider_names],
    )


def _smtp_providers(settings: Settings) -> list[SmtpProvider]:
    urls = [u.strip() for u in settings.smtp_urls.split(",") if u.strip()]
    if urls:
        _require(settings, "smtp_from")
    providers = []
    for i, url in enumerate(urls):
        try:
            providers.append(
                SmtpProvider.from_url(
                    "smtp" if i == 0 else f"smtp-{i + 1}",
                    url,
                    from_address=settings.smtp_from,
                    starttls=settings.smtp_starttls,
                    timeout=settings.provider_timeout_seconds,
                    ca_file=settings.provider_ca_file or None,
                    pool_size=settings.smtp_pool_size,
                )
            )
        except ValueError as error:
            raise ConfigError(f"NOTIFYD_SMTP_URLS: {error}") from error
    return providers


def _sms_providers(settings: Settings, http: httpx.AsyncClient) -> list[Provider]:
    providers: list[Provider] = []
    for name in settings.sms_provider_names():
        if name == "twilio":
            _require(settings, "twilio_account_sid", "twilio_auth_token", "twilio_from")
            providers.append(
                TwilioProvider(
                    http,
                    base_url=settings.twilio_base_url,
                    account_sid=settings.twilio_account_sid,
                    auth_token=settings.twilio_auth_token,
                    from_number=settings.twilio_from,
                    timeout=settings.provider_timeout_seconds,
                )
            )
        else:
            _require(settings, "vonage_api_key", "vonage_api_secret", "vonage_from")
            providers.append(
                VonageProvider(
                    http,
                    base_url=settings.vonage_base_url,
                    api_key=settings.vonage_api_key,
                    api_secret=settings.vonage_api_secret,
                    from_number=settings.vonage_from,
                    timeout=settings.provider_timeout_seconds,
                )
            )
    return providers


def _require(settings: Settings, *names: str) -> None:
    missing = [f"NOTIFYD_{n.upper()}" for n in names if not getattr(settings, n)]
    if missing:
        raise ConfigError(f"set {', '.join(missing)}")
