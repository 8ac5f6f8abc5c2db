"""OAuth 2.0 access tokens for a Google service account, by the JWT bearer grant (RFC 7523),
as FCM HTTP v1 requires them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from infrastructure.senders.http_failures import retry_after_of

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Google refuses assertions that live longer than an hour.
ASSERTION_LIFETIME_SECONDS = 3600
# A token is replaced this long before it runs out, so a request never carries one that expires
# on the way; short-lived tokens keep at least half their life.
_REFRESH_MARGIN_SECONDS = 300.0
_DEFAULT_EXPIRES_IN = 3600
_REQUIRED_FIELDS = ("project_id", "private_key_id", "private_key", "client_email")


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """The parts of a Google service-account key file that sign token requests."""

    project_id: str
    client_email: str
    private_key_id: str
    private_key: RSAPrivateKey
    token_uri: str

    @classmethod
    def from_file(cls, path: str | Path) -> ServiceAccount:
        try:
            info = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read service account file {path}: {exc}") from exc
        if not isinstance(info, dict):
            raise ValueError(f"{path}: a service account file holds a JSON object")
        return cls.from_info(info, source=str(path))

    @classmethod
    def from_info(cls, info: Mapping[str, Any], source: str = "service account") -> ServiceAccount:
        if info.get("type") != "service_account":
            raise ValueError(f"{source}: type is {info.get('type')!r}, not 'service_account'")
        missing = [f for f in _REQUIRED_FIELDS if not isinstance(info.get(f), str) or not info[f]]
        if missing:
            raise ValueError(f"{source}: missing {', '.join(missing)}")
        try:
            key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source}: private_key is not a PEM private key: {exc}") from exc
        if not isinstance(key, RSAPrivateKey):
            raise ValueError(f"{source}: private_key is not an RSA key")
        return cls(
            project_id=info["project_id"],
            client_email=info["client_email"],
            private_key_id=info["private_key_id"],
            private_key=key,
            token_uri=str(info.get("token_uri") or GOOGLE_TOKEN_URI),
        )


class TokenUnavailable(Exception):
    """No access token could be had (endpoint unreachable, refused the assertion, answered
    nonsense). Nothing was sent with it, so the caller may fail over at once."""

    def __init__(self, message: str, retry_after: timedelta | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class _Cached:
    value: str
    # On the monotonic clock.
    refresh_at: float


class GoogleServiceAccountTokens:
    """Access tokens for one service account and scope, cached until shortly before they expire.

    Concurrent callers that find no fresh token share one refresh, and share its failure too:
    when the token endpoint is down, a burst of sends costs one request to it, not one each."""

    def __init__(
        self,
        account: ServiceAccount,
        client: httpx.AsyncClient,
        *,
        token_url: str = "",
        scope: str = FCM_SCOPE,
        timeout: float = 10.0,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._account = account
        self._client = client
        # The override is where the assertion goes and the audience it names: Google checks
        # that the assertion was made for the endpoint that receives it.
        self._token_url = token_url or account.token_uri
        self._scope = scope
        self._timeout = timeout
        self._wall = wall_clock
        self._monotonic = monotonic
        self._cached: _Cached | None = None
        self._lock = asyncio.Lock()
        # Refreshes finished so far, and how the latest ended: a caller that waited on the lock
        # while a refresh failed takes that failure instead of trying again at once.
        self._refreshes = 0
        self._last_failure: TokenUnavailable | None = None
        self.minted = 0

    @classmethod
    def from_file(
        cls, path: str | Path, client: httpx.AsyncClient, **kwargs: Any
    ) -> GoogleServiceAccountTokens:
        return cls(ServiceAccount.from_file(path), client, **kwargs)

    @property
    def project_id(self) -> str:
        return self._account.project_id

    async def token(self) -> str:
        """A valid access token; raises TokenUnavailable."""
        fresh = self._fresh()
        if fresh is not None:
            return fresh
        seen = self._refreshes
        async with self._lock:
            fresh = self._fresh()
            if fresh is not None:
                return fresh
            if self._refreshes != seen and self._last_failure is not None:
                shared = self._last_failure
                raise TokenUnavailable(shared.message, shared.retry_after)
            failure: TokenUnavailable | None = None
            try:
                self._cached = await self._mint()
            except TokenUnavailable as exc:
                failure = exc
                raise
            finally:
                # A cancelled refresh leaves no failure behind: the next caller tries afresh.
                self._last_failure = failure
                self._refreshes += 1
            return self._cached.value

    def invalidate(self, token: str | None = None) -> None:
        """Forget the cached token (the API answered 401 to it). With ``token``, only if it is
        still the cached one: a token another caller already replaced stays."""
        if self._cached is not None and (token is None or self._cached.value == token):
            self._cached = None

    def _fresh(self) -> str | None:
        cached = self._cached
        if cached is not None and self._monotonic() < cached.refresh_at:
            return cached.value
        return None

    def _assertion(self) -> str:
        now = int(self._wall())
        claims = {
            "iss": self._account.client_email,
            "scope": self._scope,
            "aud": self._token_url,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECONDS,
        }
        return jwt.encode(
            claims,
            self._account.private_key,
            algorithm="RS256",
            headers={"kid": self._account.private_key_id},
        )

    async def _mint(self) -> _Cached:
        started = self._monotonic()
        try:
            response = await self._client.post(
                self._token_url,
                data={"grant_type": JWT_BEARER_GRANT, "assertion": self._assertion()},
                headers={"accept": "application/json"},
                timeout=self._timeout,
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            # Even a read timeout sent no notification: minting has no effect worth guarding.
            raise TokenUnavailable(
                f"no OAuth token from {self._token_url}: {type(exc).__name__} {exc}".strip()
            ) from exc
        if response.status_code != 200:
            raise TokenUnavailable(
                f"OAuth token endpoint {self._token_url} answered HTTP {response.status_code}"
                f"{_oauth_error(response)}",
                retry_after_of(response),
            )
        try:
            payload = response.json()
            value = payload["access_token"]
            expires_in = int(payload.get("expires_in", _DEFAULT_EXPIRES_IN))
        except (ValueError, KeyError, TypeError) as exc:
            raise TokenUnavailable(
                f"OAuth token endpoint {self._token_url} answered without a usable token"
            ) from exc
        if not isinstance(value, str) or not value or expires_in <= 0:
            raise TokenUnavailable(
                f"OAuth token endpoint {self._token_url} answered without a usable token"
            )
        self.minted += 1
        margin = min(_REFRESH_MARGIN_SECONDS, expires_in / 2)
        return _Cached(value, started + expires_in - margin)


def _oauth_error(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return ""
    if not isinstance(payload, dict):
        return ""
    parts = [str(payload.get(k, "")) for k in ("error", "error_description")]
    text = ": ".join(p for p in parts if p)
    return f": {text[:200]}" if text else ""
