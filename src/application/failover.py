"""FailoverSender: a channel's providers tried in order, each behind a circuit breaker and a
rate limit.

The contract with the use case (``DeliverNotification``):

- ``Delivered.failovers`` / ``DeliveryFailed.failovers`` list only the tries that were
  followed by another provider's try in the same call. A provider that failed last (nothing
  after it was tried) is the final failure itself, never also a ``FailedOver``; so recording one
  FAILED_OVER attempt per entry, then the outcome, records every provider tried exactly once.
- Only PROVIDER_DOWN fails over: it is the one class where the provider certainly did not
  accept, so trying the next one cannot deliver twice. MAYBE_ACCEPTED, TRANSIENT and PERMANENT
  end the call with the provider's own failure.
- A notification pinned to a provider (an earlier request to it went out unanswered) goes to
  that provider only.

What the breaker is told:

- PROVIDER_DOWN and MAYBE_ACCEPTED are failures: the provider is unreachable, erroring or too
  slow to answer.
- TRANSIENT (429, SMTP 4xx) and PERMANENT (bad address) are answers about this notification
  from a provider that is up, so they count as successes. Recording nothing instead would
  leave a half-open breaker's probe out until its lease expires, keeping a healthy provider
  shut for another cool-down because the probe happened to hit a bad address or a 429.

Breaker and rate limiter fail open: if their store (Redis) is unreachable, every provider is
allowed and unthrottled. They are protections, not correctness: a provider that is really
down still answers PROVIDER_DOWN and the chain fails over, and one that is over its rate
answers 429, retried with backoff. Failing closed would stop all delivery whenever Redis
blinks, and raising from ``record_success`` after a provider accepted would turn a delivery
into a retry, i.e. a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Final

from application.errors import Unavailable
from application.ports.clock import Clock
from application.ports.sender import (
    CircuitBreaker,
    Delivered,
    DeliveryFailed,
    FailedOver,
    Provider,
    RateLimiter,
)
from domain.notification import Channel, DeliveryResult, ErrorClass, Notification

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

_BREAKER_FAILURES: Final = frozenset({ErrorClass.PROVIDER_DOWN, ErrorClass.MAYBE_ACCEPTED})
_PROVIDER_ANSWERED: Final = frozenset({ErrorClass.TRANSIENT, ErrorClass.PERMANENT})
_ZERO: Final = timedelta(0)


class FailoverSender:
    """The channel-level ``Sender``: see the module docstring for the rules.

    ``breaker`` and ``limiter`` may be None (always allowed, never throttled): the in-app inbox
    and webhooks (whose "provider" is each tenant's own endpoint) are chains of one without
    them. ``breaker_cooldown`` (the breaker's cool-down, if known) becomes the ``retry_after``
    when providers were skipped because their breakers were open, so a retry does not come back
    (and use up an attempt) before any of them can be probed.
    """

    def __init__(
        self,
        channel: Channel,
        providers: Sequence[Provider],
        *,
        clock: Clock,
        breaker: CircuitBreaker | None = None,
        limiter: RateLimiter | None = None,
        max_rate_wait: timedelta = timedelta(seconds=1),
        breaker_cooldown: timedelta | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not providers:
            raise ValueError(f"{channel} needs at least one provider")
        names = [p.name for p in providers]
        if len(set(names)) != len(names):
            raise ValueError(f"{channel} providers must have unique names, got {names}")
        strangers = [p.name for p in providers if p.channel is not channel]
        if strangers:
            raise ValueError(f"providers {strangers} do not serve {channel}")
        if max_rate_wait < _ZERO:
            raise ValueError(f"max_rate_wait must not be negative, got {max_rate_wait!r}")
        self.channel = channel
        self._providers = tuple(providers)
        self._by_name = {p.name: p for p in providers}
        self._clock = clock
        self._breaker = breaker
        self._limiter = limiter
        self._max_rate_wait = max_rate_wait
        self._breaker_cooldown = breaker_cooldown
        self._sleep = sleep

    @property
    def provider_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self._providers)

    async def send(self, notification: Notification) -> Delivered:
        pinned = notification.pinned_provider
        if pinned is not None:
            provider = self._by_name.get(pinned)
            if provider is not None:
                return await self._send_pinned(provider, notification)
            # The provider was removed from the configuration: nothing can reach it any more,
            # so the chain is all that is left (the old provider may still deliver its copy).
            log.warning(
                "notification %s is pinned to %s, which %s no longer has; using %s",
                notification.id,
                pinned,
                self.channel,
                ", ".join(self.provider_names),
            )
        return await self._send_in_order(notification)

    async def _send_pinned(self, provider: Provider, n: Notification) -> Delivered:
        # The breaker is not asked: an earlier request to this provider went out unanswered, so
        # it may already hold the notification. Any other provider could deliver it a second
        # time, and waiting for this breaker to close is what the retry's backoff does anyway.
        # The rate limit still applies: it is the provider's quota, whoever sends.
        wait = await self._take_slot(provider)
        if wait is not None:
            raise DeliveryFailed(
                ErrorClass.TRANSIENT,
                f"rate limited: next slot in {wait.total_seconds():.3f}s",
                provider=provider.name,
                retry_after=wait,
            )
        return Delivered(await self._call(provider, n))

    async def _send_in_order(self, n: Notification) -> Delivered:
        failovers: list[FailedOver] = []
        # The latest PROVIDER_DOWN: listed as failed over only once another provider is tried.
        pending: FailedOver | None = None
        last_failure: DeliveryFailed | None = None
        reasons: list[str] = []
        retry_afters: list[timedelta] = []
        rate_limited = False
        for provider in self._providers:
            # The breaker comes first: an open provider must cost nothing, not even a sleep for
            # a rate-limit slot it will not use.
            if not await self._allow(provider):
                reasons.append(f"{provider.name}: circuit open")
                if self._breaker_cooldown is not None:
                    retry_afters.append(self._breaker_cooldown)
                continue
            # A half-open breaker's probe granted just above and then lost to a long rate-limit
            # wait is released by its lease expiring. That needs a saturated limiter on a
            # provider whose breaker was open, i.e. unused: pinned sends alone can cause it.
            wait = await self._take_slot(provider)
            if wait is not None:
                reasons.append(f"{provider.name}: rate limited for {wait.total_seconds():.3f}s")
                retry_afters.append(wait)
                rate_limited = True
                continue
            if pending is not None:
                failovers.append(pending)
                pending = None
            started_at = self._clock.now()
            try:
                result = await self._call(provider, n)
            except DeliveryFailed as failure:
                if failure.error_class is not ErrorClass.PROVIDER_DOWN:
                    failure.failovers = tuple(failovers)
                    raise
                pending = FailedOver(provider.name, failure.message, started_at, self._clock.now())
                last_failure = failure
                reasons.append(f"{provider.name}: {failure.message}")
                if failure.retry_after is not None:
                    retry_afters.append(failure.retry_after)
                continue
            return Delivered(result, tuple(failovers))
        if last_failure is not None and len(reasons) == 1:
            # A chain of one (the inbox, a webhook): the provider's own failure says more than
            # a summary of one, and keeps its retry_after.
            raise last_failure
        raise DeliveryFailed(
            # A rate-limited provider is merely busy; otherwise every one is down or open.
            ErrorClass.TRANSIENT if rate_limited else ErrorClass.PROVIDER_DOWN,
            "all providers unavailable: " + "; ".join(reasons),
            provider=pending.provider if pending is not None else self._providers[0].name,
            retry_after=min(retry_afters, default=None),
            failovers=tuple(failovers),
        )

    async def _call(self, provider: Provider, n: Notification) -> DeliveryResult:
        """One provider request, its outcome told to the breaker."""
        try:
            result = await provider.send(n)
        except DeliveryFailed as failure:
            log.info(
                "%s did not take notification %s for %s: %s: %s",
                provider.name,
                n.id,
                _recipient(n),
                failure.error_class,
                failure.summary,
            )
            if failure.error_class in _BREAKER_FAILURES:
                await self._record(provider, success=False)
            elif failure.error_class in _PROVIDER_ANSWERED:
                await self._record(provider, success=True)
            raise
        except Exception as error:
            # An adapter bug: it may have struck after the request went out (say, parsing the
            # provider's answer), so the provider may hold the notification. MAYBE_ACCEPTED
            # pins it there; anything else could let a retry deliver it through another
            # provider as well.
            log.exception("provider %s raised unexpectedly", provider.name)
            await self._record(provider, success=False)
            raise DeliveryFailed(
                ErrorClass.MAYBE_ACCEPTED,
                f"unexpected {type(error).__name__}: {error}",
                provider=provider.name,
            ) from error
        await self._record(provider, success=True)
        return result

    async def _allow(self, provider: Provider) -> bool:
        if self._breaker is None:
            return True
        try:
            return await self._breaker.allow(provider.name, self._clock.now())
        except Unavailable as error:
            log.warning("circuit breaker unreachable, allowing %s: %s", provider.name, error)
            return True

    async def _record(self, provider: Provider, *, success: bool) -> None:
        if self._breaker is None:
            return
        now = self._clock.now()
        try:
            if success:
                await self._breaker.record_success(provider.name, now)
            else:
                await self._breaker.record_failure(provider.name, now)
        except Exception as error:
            # Any breaker trouble (unreachable, read-only replica, OOM) must not turn a provider's
            # answer, an acceptance above all, into an error that would send the message again.
            log.warning("circuit breaker failed, outcome of %s lost: %r", provider.name, error)

    async def _take_slot(self, provider: Provider) -> timedelta | None:
        """Take a rate-limit slot, sleeping for it while the total wait stays within
        ``max_rate_wait``. None when taken, else how long until one is free."""
        if self._limiter is None:
            return None
        waited = _ZERO
        while True:
            try:
                wait = await self._limiter.acquire(provider.name, self._clock.now())
            except Unavailable as error:
                log.warning("rate limiter unreachable, not throttling %s: %s", provider.name, error)
                return None
            if wait <= _ZERO:
                return None
            # Bounded in total, not per wait: other workers may keep taking the slot we woke
            # up for, and a worker must not sleep for ever on one provider.
            if waited + wait > self._max_rate_wait:
                return wait
            await self._sleep(wait.total_seconds())
            waited += wait


def _recipient(n: Notification) -> str:
    """Who a log line is about. Emails and phone numbers go in as they are: the log formatter
    masks them (keeping the domain, the last digits), which still tells an operator which
    domain or which number refused. Device tokens and URLs are only named."""
    if n.address is None:
        return f"user {n.user_id}"
    if n.address.kind in ("email", "phone"):
        return f"{n.address.kind} {n.address.value}"
    return f"{n.address.kind} of user {n.user_id}"
