"""DeliverNotification: a worker's handling of one claimed notification."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from datetime import timedelta

from application.errors import ConcurrentUpdate, Unavailable
from application.ports.clock import Clock
from application.ports.repositories import UnitOfWorkFactory
from application.ports.scheduler import Claim, Scheduler
from application.ports.sender import DeliveryFailed, Sender
from domain.notification import (
    Channel,
    DeliveryResult,
    ErrorClass,
    Notification,
    RetryPolicy,
    Status,
)

log = logging.getLogger(__name__)

# A claim made a little before its due time (clock skew between processes) is still served.
EARLY_TOLERANCE = timedelta(milliseconds=50)


class DeliverNotification:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        scheduler: Scheduler,
        senders: Mapping[Channel, Sender],
        retry_policies: Mapping[Channel, RetryPolicy],
        clock: Clock,
        random: Callable[[], float],
        lease: timedelta = timedelta(seconds=30),
        record_patience: timedelta = timedelta(minutes=5),
    ) -> None:
        self._lease = lease
        self._record_patience = record_patience
        self._uow = uow
        self._scheduler = scheduler
        self._senders = senders
        self._policies = retry_policies
        self._clock = clock
        self._random = random

    async def execute(self, claim: Claim) -> Status | None:
        """Returns the status the notification was left in (None if it was not ours to handle)."""
        notification = await self._begin(claim)
        if notification is None:
            return None
        if notification.status is not Status.SENDING:
            await self._scheduler.ack(claim)
            return notification.status
        outcome = await self._send(notification)
        return await self._finish(claim, notification, outcome)

    def _policy(self, n: Notification) -> RetryPolicy:
        return self._policies.get(n.channel, RetryPolicy())

    async def _begin(self, claim: Claim) -> Notification | None:
        now = self._clock.now()
        async with self._uow() as uow:
            n = await uow.notifications.get_for_delivery(claim.notification_id)
            if n is None or n.status not in (Status.QUEUED, Status.SENDING):
                # Cancelled, already settled by an earlier holder, or never committed.
                await self._scheduler.ack(claim)
                return None
            if n.status is Status.QUEUED and n.due_at > now + EARLY_TOLERANCE:
                await self._scheduler.retry_at(claim, n.due_at, now)
                return None
            n.begin_attempt(now, self._policy(n).max_attempts)
            try:
                await uow.notifications.save(n)
            except ConcurrentUpdate:
                log.info("notification %s changed under us; leaving it to its holder", n.id)
                return None
            await uow.commit()
        return n

    async def _send(self, n: Notification) -> DeliveryResult | DeliveryFailed:
        sender = self._senders.get(n.channel)
        if sender is None:
            return DeliveryFailed(
                ErrorClass.PERMANENT, f"no sender for channel {n.channel}", provider="none"
            )
        try:
            return await sender.send(n)
        except DeliveryFailed as failure:
            return failure
        except Exception as error:
            # A bug in an adapter must not strand the notification: treat it as transient.
            log.exception("sender for %s raised unexpectedly", n.channel)
            return DeliveryFailed(
                ErrorClass.TRANSIENT, f"{type(error).__name__}: {error}", provider=n.channel.lower()
            )

    async def _finish(
        self, claim: Claim, n: Notification, outcome: DeliveryResult | DeliveryFailed
    ) -> Status | None:
        now = self._clock.now()
        if isinstance(outcome, DeliveryResult):
            n.record_success(now, outcome)
        else:
            n.record_failure(
                now,
                provider=outcome.provider,
                error_class=outcome.error_class,
                message=outcome.message,
                policy=self._policy(n),
                random=self._random,
                retry_after=outcome.retry_after,
            )
        if not await self._record(claim, n):
            return None
        if n.status is Status.QUEUED:
            await self._scheduler.retry_at(claim, n.due_at, now)
        else:
            await self._scheduler.ack(claim)
        return n.status

    async def _record(self, claim: Claim, n: Notification) -> bool:
        """Write the outcome. The provider has answered, so giving up would mean sending again:
        while Postgres is down, keep the lease alive and keep trying (bounded by patience)."""
        give_up_at = time.monotonic() + self._record_patience.total_seconds()
        pause = 0.1
        loaded_version = n.version
        while True:
            # save() moves the version forward; a failed commit must not leave it moved.
            n.version = loaded_version
            try:
                async with self._uow() as uow:
                    await uow.notifications.save(n)
                    await uow.commit()
                return True
            except ConcurrentUpdate:
                # Our lease lapsed and another worker took over: its record wins.
                log.warning("late outcome for %s rejected: another attempt superseded it", n.id)
                return False
            except Unavailable:
                if time.monotonic() >= give_up_at:
                    raise
                log.warning("cannot record the outcome of %s yet; retrying in %.1fs", n.id, pause)
                # If Redis is down too the lease may lapse; the version check still guards.
                with contextlib.suppress(Unavailable):
                    await self._scheduler.extend(claim, self._clock.now(), self._lease)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
