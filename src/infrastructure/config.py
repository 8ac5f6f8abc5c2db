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


@dataclass(frozen=True)
class Settings:
    database_url: str = ""
    redis_url: str = ""
    listen: str = "0.0.0.0:50051"
    reuse_port: bool = False
    db_pool_size: int = 10
    redis_namespace: str = "notifyd"
    worker_concurrency: int = 64
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

    def attempts_for(self, channel: str) -> int:
        return dict(self.max_attempts_by_channel).get(channel, self.max_attempts)

    def check(self) -> None:
        if not 0 <= self.dedup_window_seconds <= 7 * 24 * 3600:
            raise ConfigError("NOTIFYD_DEDUP_WINDOW_SECONDS must be 0 to 604800 (7 days)")
        if self.worker_concurrency < 1:
            raise ConfigError("NOTIFYD_WORKER_CONCURRENCY must be at least 1")
        for name, value in (("", self.max_attempts), *self.max_attempts_by_channel):
            if not 1 <= value <= MAX_ATTEMPTS_LIMIT:
                suffix = f"_{name}" if name else ""
                raise ConfigError(f"NOTIFYD_MAX_ATTEMPTS{suffix} must be 1 to {MAX_ATTEMPTS_LIMIT}")
        if self.lease_seconds <= self.webhook_timeout_seconds:
            raise ConfigError("NOTIFYD_LEASE_SECONDS must exceed NOTIFYD_WEBHOOK_TIMEOUT_SECONDS")

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
