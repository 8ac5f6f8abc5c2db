"""DeliverNotification: a worker's handling of one claimed notification."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

from application.errors import ConcurrentUpdate, Unavailable
from application.group_commit import GroupCommit, unless_unavailable
from application.ports.clock import Clock
from application.ports.delivery_observer import (
    AttemptResult,
    DeliveryObserver,
    DeliveryOutcome,
    NoObserver,
    tell,
)
from application.ports.inbox_notifier import InboxNotifier
from application.ports.repositories import (
    InboxEventKind,
    Suppression,
    UnitOfWork,
    UnitOfWorkFactory,
)
from application.ports.scheduler import Claim, Scheduler
from application.ports.sender import Delivered, DeliveryFailed, Sender
from domain.notification import (
    Address,
    AddressRejection,
    Channel,
    ErrorClass,
    Notification,
    RetryPolicy,
    Status,
)

log = logging.getLogger(__name__)

# A claim made a little before its due time (clock skew between processes) is still served.
EARLY_TOLERANCE = timedelta(milliseconds=50)
# How long a finished send waits for its lease keeper to stop before recording the outcome.
KEEPER_STOP_SECONDS = 1.0
# Claims begun together, and outcomes recorded together, share one transaction of at most
# this many notifications.
MAX_BATCH = 128

_HANDLED = {
    Status.SENT: DeliveryOutcome.SENT,
    Status.DELIVERED: DeliveryOutcome.SENT,
    Status.QUEUED: DeliveryOutcome.RETRY,
    Status.FAILED: DeliveryOutcome.FAILED,
    Status.EXPIRED: DeliveryOutcome.EXPIRED,
}


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
        inbox_notifier: InboxNotifier | None = None,
        observer: DeliveryObserver | None = None,
    ) -> None:
        self._inbox_notifier = inbox_notifier
        self._observer: DeliveryObserver = observer or NoObserver()
        self._lease = lease
        self._record_patience = record_patience
        self._uow = uow
        self._scheduler = scheduler
        self._senders = senders
        self._policies = retry_policies
        self._clock = clock
        self._random = random
        # Deliveries run concurrently, each a few statements of its own; those that reach the
        # same step together share one transaction instead (each with its own version check).
        self._beginnings: GroupCommit[None, Claim, Notification | None] = GroupCommit(
            lambda _, claims: self._begin_batch(claims),
            max_batch=MAX_BATCH,
            max_in_flight=1,
            distinct=lambda claim: claim.notification_id,
            alone_after=unless_unavailable,
        )
        self._records: GroupCommit[None, Notification, bool] = GroupCommit(
            lambda _, outcomes: self._record_batch(outcomes),
            max_batch=MAX_BATCH,
            max_in_flight=1,
            distinct=lambda n: n.id,
            alone_after=unless_unavailable,
        )

    async def execute(self, claim: Claim) -> Status | None:
        """Returns the status the notification was left in (None if it was not ours to handle)."""
        notification = await self._begin(claim)
        if notification is None:
            return None
        if notification.status is not Status.SENDING:
            self._observe_unsent(notification)
            await self._scheduler.ack(claim)
            return notification.status
        outcome = await self._send_holding_lease(claim, notification)
        self._observe_attempts(notification.channel, outcome)
        failed = outcome if isinstance(outcome, DeliveryFailed) else None
        # The address verdict belongs to the notification's channel and address as sent, which
        # a fallback to the next channel is about to replace.
        sent_to = notification.address
        status = await self._finish(claim, notification, outcome)
        if status is not None and failed is not None and failed.rejection is not None:
            await self._apply_rejection(notification, sent_to, failed)
        if status is Status.DELIVERED and notification.channel is Channel.IN_APP:
            await self._wake_inbox(notification)
        return status

    def _policy(self, n: Notification) -> RetryPolicy:
        return self._policies.get(n.channel, RetryPolicy())

    async def _begin(self, claim: Claim) -> Notification | None:
        return await self._beginnings.submit(None, claim)

    async def _begin_batch(self, claims: Sequence[Claim]) -> list[Notification | Exception | None]:
        """_begin for claims that arrived together: one load, one write, one commit."""
        now = self._clock.now()
        results: list[Notification | Exception | None] = [None] * len(claims)
        # Not ours to send: handed back to the queue once the transaction is over.
        release: list[tuple[int, Claim, datetime | None]] = []
        begun: list[tuple[int, Notification]] = []
        async with self._uow() as uow:
            found = await uow.notifications.get_for_delivery_many(
                [c.notification_id for c in claims]
            )
            for i, claim in enumerate(claims):
                n = found.get(claim.notification_id)
                if n is None or n.status not in (Status.QUEUED, Status.SENDING):
                    # Cancelled, already settled by an earlier holder, or never committed.
                    release.append((i, claim, None))
                elif n.status is Status.QUEUED and n.due_at > now + EARLY_TOLERANCE:
                    release.append((i, claim, n.due_at))
                else:
                    try:
                        n.begin_attempt(now, self._policy(n).max_attempts)
                    except Exception as error:
                        results[i] = error
                        continue
                    begun.append((i, n))
            superseded = await uow.notifications.save_many([n for _, n in begun])
            await uow.commit()
        for i, n in begun:
            if n.id in superseded:
                log.info("notification %s changed under us; leaving it to its holder", n.id)
            else:
                results[i] = n
        for i, claim, due_at in release:
            try:
                if due_at is None:
                    await self._scheduler.ack(claim)
                else:
                    await self._scheduler.retry_at(claim, due_at, now)
            except Exception as error:
                results[i] = error
        return results

    async def _send_holding_lease(
        self, claim: Claim, n: Notification
    ) -> Delivered | DeliveryFailed:
        """Send while keeping the lease alive: a failover chain can outlast one lease (several
        providers each up to their timeout), and a lapsed lease lets another worker start over
        at the first provider while this one may still get an acceptance: two messages."""
        keeper = asyncio.create_task(self._keep_lease(claim, n))
        try:
            return await self._send(n)
        finally:
            keeper.cancel()
            # Bounded: a Redis call cut off mid-reply can swallow the cancellation (seen after
            # connection resets), and an unbounded wait then strands the answer unrecorded
            # while the keeper goes on extending the lease, so nothing ever rescues it. A
            # keeper that outlives us stops at its next extend: the lease is gone by then.
            done, _ = await asyncio.wait({keeper}, timeout=KEEPER_STOP_SECONDS)
            if not done:
                log.warning("lease keeper for %s did not stop; recording the outcome anyway", n.id)

    async def _keep_lease(self, claim: Claim, n: Notification) -> None:
        period = self._lease.total_seconds() / 3
        while True:
            await asyncio.sleep(period)
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                # Cancelled, but a call below swallowed it: stop anyway.
                return
            try:
                if not await self._scheduler.extend(claim, self._clock.now(), self._lease):
                    log.warning("lease on %s lost while sending; the version check decides", n.id)
                    return
            except Unavailable:
                log.warning("cannot extend the lease on %s while sending", n.id)

    async def _send(self, n: Notification) -> Delivered | DeliveryFailed:
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
        self, claim: Claim, n: Notification, outcome: Delivered | DeliveryFailed
    ) -> Status | None:
        tried_on = n.channel
        for tried in outcome.failovers:
            n.record_failover(tried.finished_at, provider=tried.provider, message=tried.message)
        now = self._clock.now()
        if isinstance(outcome, Delivered):
            n.record_success(now, outcome.result)
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
        # Counted once recorded: a superseded outcome is the other holder's to count, and an
        # unrecorded one is delivered again (and counted then).
        self._observe_handled(tried_on, n, outcome, now)
        if n.status is Status.QUEUED:
            await self._scheduler.retry_at(claim, n.due_at, now)
        else:
            await self._scheduler.ack(claim)
        return n.status

    def _observe_attempts(self, channel: Channel, outcome: Delivered | DeliveryFailed) -> None:
        for tried in outcome.failovers:
            tell(
                functools.partial(
                    self._observer.attempt_finished,
                    channel,
                    tried.provider,
                    AttemptResult.FAILED_OVER,
                )
            )
        if isinstance(outcome, Delivered):
            provider, result = outcome.result.provider, AttemptResult.ACCEPTED
        else:
            provider, result = outcome.provider, AttemptResult.of_failure(outcome.error_class)
        tell(functools.partial(self._observer.attempt_finished, channel, provider, result))

    def _observe_handled(
        self,
        tried_on: Channel,
        n: Notification,
        outcome: Delivered | DeliveryFailed,
        now: datetime,
    ) -> None:
        latency: timedelta | None = None
        if isinstance(outcome, Delivered):
            provider = outcome.result.provider
            handled = DeliveryOutcome.SENT
            # From when the caller wanted it sent; a quiet-hours hold or a backoff counts as
            # waiting, as the recipient sees it.
            due = n.created_at
            if n.scheduled_at is not None and n.scheduled_at > due:
                due = n.scheduled_at
            latency = max(now - due, timedelta(0))
        else:
            provider = outcome.provider
            handled = _HANDLED.get(n.status, DeliveryOutcome.FAILED)
            if handled is DeliveryOutcome.RETRY and n.channel is not tried_on:
                handled = DeliveryOutcome.FALLBACK
        tell(lambda: self._observer.notification_handled(tried_on, provider, handled, latency))

    def _observe_unsent(self, n: Notification) -> None:
        """Expired before it could be sent, or given up after its holders kept vanishing."""
        provider = n.attempts[-1].provider if n.attempts else ""
        handled = _HANDLED.get(n.status, DeliveryOutcome.FAILED)
        tell(lambda: self._observer.notification_handled(n.channel, provider, handled))

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
                if await self._records.submit(None, n):
                    return True
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

    async def _record_batch(self, batch: Sequence[Notification]) -> list[bool | Exception]:
        """Outcomes that finished together, in one transaction: True for each one written,
        False for each one another attempt superseded (nothing of it is written)."""
        versions = [n.version for n in batch]
        try:
            async with self._uow() as uow:
                into_inbox = [n for n in batch if _enters_inbox(n)]
                superseded = await uow.notifications.save_many(
                    [n for n in batch if not _enters_inbox(n)]
                )
                # One at a time, each with its inbox entry: an entry carries the unread count
                # just after its own notification arrived, as it would alone.
                for n in into_inbox:
                    superseded |= await uow.notifications.save_many([n])
                    if n.id not in superseded:
                        await self._log_inbox_change(uow, n)
                await uow.commit()
        except BaseException:
            # Nothing was written: each one's version must not have moved either.
            for n, version in zip(batch, versions, strict=True):
                n.version = version
            raise
        return [n.id not in superseded for n in batch]

    async def _log_inbox_change(self, uow: UnitOfWork, n: Notification) -> None:
        """A delivered in-app notification enters the user's inbox log in the transaction that
        delivers it, so a stream resuming from a cursor can neither miss nor repeat it."""
        if _enters_inbox(n):
            await uow.inbox.append(
                n.tenant_id,
                n.user_id,
                InboxEventKind.NOTIFICATION_DELIVERED,
                n.updated_at,
                notification_id=n.id,
            )

    async def _wake_inbox(self, n: Notification) -> None:
        if self._inbox_notifier is None:
            return
        try:
            await self._inbox_notifier.publish(n.tenant_id, n.user_id)
        except Exception:
            # Streams also poll: a lost wake-up delays an event, it does not lose it.
            log.warning("could not wake inbox streams of %s", n.id, exc_info=True)

    async def _apply_rejection(
        self, n: Notification, address: Address | None, failure: DeliveryFailed
    ) -> None:
        """Act on what the provider said about the address itself, once the outcome is
        recorded: a dead token or endpoint leaves the recipient's record; an opted-out number
        is suppressed for the tenant. Best effort: if it does not stick, the next send to
        that address fails the same way and tries again."""
        if address is None or not address.value:
            return
        now = self._clock.now()
        for _ in range(3):
            try:
                async with self._uow() as uow:
                    if failure.rejection is AddressRejection.UNSUBSCRIBED:
                        reason = f"{failure.provider}: {failure.message}"[:500]
                        await uow.suppressions.add(Suppression(n.tenant_id, address, reason, now))
                    else:
                        recipient = await uow.recipients.get(n.tenant_id, n.user_id)
                        if recipient is None or not recipient.forget_address(address, now):
                            return
                        await uow.recipients.save(recipient)
                    await uow.commit()
                log.info("%s of notification %s: %s", failure.rejection, n.id, address.kind)
                return
            except ConcurrentUpdate:
                continue  # the recipient changed under us: reload and decide again
            except Unavailable:
                log.warning("could not record that %s's address was rejected", n.id)
                return


def _enters_inbox(n: Notification) -> bool:
    return n.channel is Channel.IN_APP and n.status is Status.DELIVERED
