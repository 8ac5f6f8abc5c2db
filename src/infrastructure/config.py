"""Settings from NOTIFYD_* environment variables, with defaults that suit one box."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

CHANNELS = ("EMAIL", "SMS", "PUSH", "WEBHOOK", "IN_APP")
MAX_ATTEMPTS_LIMIT = 100


class ConfigError(ValueError):
    pass


def _attempts_by_channel(env: Mapping[str, str]) -> tuple[tuple[str, int], ...]:
    found = []
    for channel in CHANNELS:
        raw = env.get(f"NOTIFYD_MAX_ATTEMPTS_{channel}")
        if raw is None:
            continue
        try:
            found.append((channel, int(raw)))
        except ValueError as error:
            raise ConfigError(f"NOTIFYD_MAX_ATTEMPTS_{channel}: {error}") from error
    return tuple(found)


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"not a boolean: {value!r}")


def host_port_or_off(value: str) -> tuple[str, int] | None:
    """'host:port' (IPv6 as '[::1]:9464') -> (host, port); 'off' -> None."""
    text = value.strip()
    if text.lower() == "off":
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected host:port or off, got {value!r}")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"port must be a number, got {port!r}") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"port must be 0 to 65535, got {number}")
    return host.removeprefix("[").removesuffix("]"), number


@dataclass(frozen=True)
class Settings:
    database_url: str = ""
    redis_url: str = ""
    listen: str = "0.0.0.0:50051"
    reuse_port: bool = False
    db_pool_size: int = 10
    redis_namespace: str = "notifyd"
    # Deliveries in flight per worker. Those that reach the same step share a transaction, so
    # more of them cost less CPU each: a two-worker drain ran at 1,050/s with 64, 1,205/s with
    # 128, 1,260/s with 256. 128 stays under the webhook sender's 200 connections per process.
    worker_concurrency: int = 128
    lease_seconds: float = 30.0
    poll_interval_seconds: float = 0.05
    starvation_seconds: float = 30.0
    # Default for every channel; NOTIFYD_MAX_ATTEMPTS_<CHANNEL> (e.g. _WEBHOOK) overrides one.
    max_attempts: int = 5
    max_attempts_by_channel: tuple[tuple[str, int], ...] = ()
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 600.0
    webhook_timeout_seconds: float = 10.0
    # Dev mode turns this on so a newcomer can point a webhook at localhost.
    allow_private_targets: bool = False
    auth_cache_seconds: float = 30.0
    # Identical content to the same recipient and channel within this window is sent once;
    # a category can set its own window. 0 turns it off for categories that do not.
    dedup_window_seconds: float = 0.0
    shutdown_grace_seconds: float = 10.0
    housekeeping_seconds: float = 5.0
    reconcile_grace_seconds: float = 5.0
    log_level: str = "INFO"
    # "json": one object per line with trace and request ids (for collectors); "text": one
    # line for a human. Both mask emails, phone numbers, tokens and secrets.
    log_format: str = "json"
    # Prometheus metrics over HTTP (serve, worker, run, dev): host:port, port 0 for any free
    # one, "off" for none. Two processes on one host need two ports.
    metrics_listen: str = "127.0.0.1:9464"

    # -- providers (a channel is offered when its providers are configured) -------------------
    # One deadline per provider call; an extra CA bundle to trust (self-signed sandbox peers).
    provider_timeout_seconds: float = 10.0
    provider_ca_file: str = ""
    # EMAIL: smtp://[user:password@]host[:port] (STARTTLS when smtp_starttls) or smtps:// for
    # TLS from the first byte. A comma-separated list is a failover chain: primary first.
    smtp_urls: str = ""
    smtp_starttls: bool = False
    smtp_from: str = ""
    smtp_pool_size: int = 4
    # SMS: providers in the order tried, from "twilio" and "vonage".
    sms_providers: str = ""
    twilio_base_url: str = "https://api.twilio.com"
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_from: str = ""
    vonage_base_url: str = "https://rest.nexmo.com"
    vonage_api_key: str = ""
    vonage_api_secret: str = ""
    vonage_from: str = ""
    # PUSH: FCM HTTP v1 (a service-account JSON file) for Android and web devices, APNs
    # (token auth with a .p8 key) for iOS devices.
    fcm_base_url: str = "https://fcm.googleapis.com"
    fcm_credentials_file: str = ""
    # Overrides the service account's token_uri (a sandbox OAuth server).
    fcm_token_url: str = ""
    apns_base_url: str = "https://api.push.apple.com"
    apns_key_file: str = ""
    apns_key_id: str = ""
    apns_team_id: str = ""
    apns_topic: str = ""
    # Failover: a provider's breaker opens after this many failures within the window, and
    # lets one probe through after the cool-down.
    breaker_failures: int = 5
    breaker_window_seconds: float = 30.0
    breaker_cooldown_seconds: float = 30.0
    # Requests per second per provider, e.g. "twilio=10,vonage=5"; unlisted: unlimited.
    rate_limits: str = ""
    # A rotated webhook secret keeps signing (as a second signature) this long.
    webhook_secret_overlap_hours: float = 24.0
    # Start sandbox peers for every channel in this process and point the providers at them
    # (`notifyd dev` does by default); they journal what they receive in sandbox_dir, which
    # `notifyd sandbox` prints. For development and tests only.
    sandbox: bool = False
    sandbox_dir: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"NOTIFYD_{f.name.upper()}")
            if raw is None or f.name == "max_attempts_by_channel":
                continue
            try:
                if f.type == "bool":
                    values[f.name] = _bool(raw)
                elif f.type == "int":
                    values[f.name] = int(raw)
                elif f.type == "float":
                    values[f.name] = float(raw)
                else:
                    values[f.name] = raw
            except ValueError as error:
                raise ConfigError(f"NOTIFYD_{f.name.upper()}: {error}") from error
        values["max_attempts_by_channel"] = _attempts_by_channel(env)
        settings = replace(cls(**values), **overrides)
        settings.check()
        return settings

    def rate_limit_per_second(self) -> dict[str, float]:
        limits: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in self.rate_limits.split(","))):
            name, _, rate = item.partition("=")
            try:
                limits[name.strip()] = float(rate)
            except ValueError as error:
                raise ConfigError(f"NOTIFYD_RATE_LIMITS: {item!r} is not name=rate") from error
            if limits[name.strip()] <= 0:
                raise ConfigError(f"NOTIFYD_RATE_LIMITS: {item!r} must be above 0")
        return limits

    @property
    def has_providers(self) -> bool:
        """Any EMAIL, SMS or PUSH provider configured (WEBHOOK and IN_APP need none)."""
        return bool(
            self.smtp_urls or self.sms_providers or self.fcm_credentials_file or self.apns_key_file
        )

    def sms_provider_names(self) -> list[str]:
        return [p.strip() for p in self.sms_providers.split(",") if p.strip()]

    def attempts_for(self, channel: str) -> int:
        return dict(self.max_attempts_by_channel).get(channel, self.max_attempts)

    def metrics_address(self) -> tuple[str, int] | None:
        """Where to serve metrics; None when off."""
        try:
            return host_port_or_off(self.metrics_listen)
        except ValueError as error:
            raise ConfigError(f"NOTIFYD_METRICS_LISTEN: {error}") from error

    def check(self) -> None:
        self.metrics_address()
        if not 0 <= self.dedup_window_seconds <= 7 * 24 * 3600:
            raise ConfigError("NOTIFYD_DEDUP_WINDOW_SECONDS must be 0 to 604800 (7 days)")
        if self.worker_concurrency < 1:
            raise ConfigError("NOTIFYD_WORKER_CONCURRENCY must be at least 1")
        for name, value in (("", self.max_attempts), *self.max_attempts_by_channel):
            if not 1 <= value <= MAX_ATTEMPTS_LIMIT:
                suffix = f"_{name}" if name else ""
                raise ConfigError(f"NOTIFYD_MAX_ATTEMPTS{suffix} must be 1 to {MAX_ATTEMPTS_LIMIT}")
        self.rate_limit_per_second()
        unknown = set(self.sms_provider_names()) - {"twilio", "vonage"}
        if unknown:
            raise ConfigError(
                f"NOTIFYD_SMS_PROVIDERS: unknown {sorted(unknown)}; use twilio, vonage"
            )
        if self.breaker_failures < 1:
            raise ConfigError("NOTIFYD_BREAKER_FAILURES must be at least 1")
        if self.breaker_cooldown_seconds <= self.provider_timeout_seconds:
            # The half-open probe's lease is the cool-down: a probe still waiting for its
            # answer must not lose it and let a second probe out.
            raise ConfigError(
                "NOTIFYD_BREAKER_COOLDOWN_SECONDS must exceed NOTIFYD_PROVIDER_TIMEOUT_SECONDS"
            )
        slowest = self.webhook_timeout_seconds
        if self.has_providers:
            slowest = max(slowest, self.provider_timeout_seconds)
        if self.lease_seconds <= slowest:
            raise ConfigError(
                "NOTIFYD_LEASE_SECONDS must exceed NOTIFYD_WEBHOOK_TIMEOUT_SECONDS and "
                "NOTIFYD_PROVIDER_TIMEOUT_SECONDS"
            )

    def require_servers(self) -> None:
        missing = [
            n
            for n, v in (
                ("NOTIFYD_DATABASE_URL", self.database_url),
                ("NOTIFYD_REDIS_URL", self.redis_url),
            )
            if not v
        ]
        if missing:
            raise ConfigError(f"set {' and '.join(missing)} (or run `notifyd dev`)")
