"""The worker loop: claim a batch, deliver each claim concurrently, recover lost leases."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import timedelta

from opentelemetry import trace

from application.errors import Unavailable
from application.ports.clock import Clock
from application.ports.scheduler import Claim, Scheduler
from application.use_cases.deliver_notification import DeliverNotification
from application.use_cases.inbox import PruneInboxEvents
from application.use_cases.reconcile_queue import ReconcileQueue

log = logging.getLogger(__name__)

# The span of one delivery, child of the context the claim brought from Redis.
DeliverySpan = Callable[[Claim], contextlib.AbstractContextManager[trace.Span]]


def _untraced(_: Claim) -> contextlib.AbstractContextManager[trace.Span]:
    return contextlib.nullcontext(trace.INVALID_SPAN)


class Worker:
    def __init__(
        self,
        scheduler: Scheduler,
        deliver: DeliverNotification,
        reconcile: ReconcileQueue,
        clock: Clock,
        prune_inbox: PruneInboxEvents | None = None,
        *,
        concurrency: int = 64,
        lease: timedelta = timedelta(seconds=30),
        poll_interval: float = 0.05,
        housekeeping_interval: float = 5.0,
        max_backoff: float = 5.0,
        delivery_span: DeliverySpan | None = None,
    ) -> None:
        self._scheduler = scheduler
        self._delivery_span = delivery_span or _untraced
        self._deliver = deliver
        self._reconcile = reconcile
        self._prune_inbox = prune_inbox
        self._clock = clock
        self._concurrency = concurrency
        self._lease = lease
        self._poll_interval = poll_interval
        self._housekeeping_interval = housekeeping_interval
        self._max_backoff = max_backoff
        self._in_flight: set[asyncio.Task[None]] = set()
        # Claims wait for this many free slots (a quarter of them), so they come in batches.
        self._refill_at = max(1, concurrency // 4)
        self._room = asyncio.Event()
        self._paused_until = 0.0
        self._failure_backoff = 0.0
        self._stop = asyncio.Event()
        self._housekeeping_task: asyncio.Task[None] | None = None
        self.delivered = 0

    async def run(self, stop: asyncio.Event, grace: float = 10.0) -> None:
        self._stop = stop
        # Beside the claims, not between them: a reconciler's pass over a large backlog takes
        # seconds, and claims waiting for it would leave due items late and slots idle.
        housekeeping = self._housekeeping_task = asyncio.create_task(self._keep_house(stop))
        try:
            await self._claim_until(stop, housekeeping)
            # The round in progress may be a full scan of a large backlog: it gets the
            # deliveries' grace and no more, as whoever reconciles next scans in full anyway.
            await asyncio.gather(self._drain(grace), asyncio.wait({housekeeping}, timeout=grace))
        finally:
            if not housekeeping.done():
                housekeeping.cancel()
                await asyncio.gather(housekeeping, return_exceptions=True)
            await self._resign()
        if not housekeeping.cancelled() and (error := housekeeping.exception()) is not None:
            # Housekeeping failed in a way it did not expect (logged there): end the worker.
            raise error

    async def _claim_until(self, stop: asyncio.Event, housekeeping: asyncio.Task[None]) -> None:
        backoff = self._poll_interval
        while not stop.is_set() and not housekeeping.done():
            try:
                claimed = await self._claim_batch()
                backoff = self._poll_interval
            except Unavailable as error:
                # Back off (capped) instead of spinning while Postgres or Redis is down.
                log.warning("worker paused: %s; retrying in %.1fs", error, backoff)
                await self._sleep(stop, backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            if claimed == 0:
                await self._sleep(stop, self._poll_interval)

    async def _keep_house(self, stop: asyncio.Event) -> None:
        backoff = self._poll_interval
        while not stop.is_set():
            try:
                await self._housekeeping()
            except Unavailable as error:
                log.warning("housekeeping paused: %s; retrying in %.1fs", error, backoff)
                await self._sleep(stop, backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            except Exception:
                log.exception("housekeeping failed: the worker stops claiming and drains")
                raise
            backoff = self._poll_interval
            await self._sleep(stop, self._housekeeping_interval)

    async def _resign(self) -> None:
        try:
            await self._reconcile.resign()
        except Unavailable:
            pass  # The role lapses at the end of its term instead.
        except Exception:
            # Not worth hiding why the worker stops: the role lapses at the end of its term.
            log.exception("handing the reconciler's role over failed")

    async def _claim_batch(self) -> int:
        if time.monotonic() < self._paused_until:
            # Deliveries just failed for an unavailable dependency: do not claim more yet.
            return 0
        free = self._concurrency - len(self._in_flight)
        if free < self._refill_at:
            # (Nearly) every slot is busy: wait until a batch's worth frees up, or for
            # shutdown, whichever is first. Claiming one slot at a time would begin, record
            # and ack one delivery at a time instead of a batch in one transaction.
            await self._wait_for_room()
            return 1
        claims = await self._scheduler.claim(free, self._clock.now(), self._lease)
        for claim in claims:
            task = asyncio.create_task(self._handle(claim))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)
        return len(claims)

    async def _wait_for_room(self) -> None:
        self._room.clear()
        room = asyncio.ensure_future(self._room.wait())
        stopping = asyncio.ensure_future(self._stop.wait())
        # Failed housekeeping ends the claiming too.
        ended = {self._housekeeping_task} if self._housekeeping_task is not None else set()
        try:
            await asyncio.wait({room, stopping, *ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            room.cancel()
            stopping.cancel()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if self._concurrency - len(self._in_flight) >= self._refill_at:
            self._room.set()

    async def _handle(self, claim: Claim) -> None:
        try:
            with self._delivery_span(claim) as span:
                status = await self._deliver.execute(claim)
                # None: cancelled, settled or held by another worker meanwhile; not ours.
                span.set_attribute("notifyd.notification.status", str(status or "skipped"))
            self.delivered += 1
            self._failure_backoff = 0.0
        except Unavailable as error:
            self._failure_backoff = min(
                max(self._failure_backoff * 2, self._poll_interval * 4), self._max_backoff
            )
            self._paused_until = time.monotonic() + self._failure_backoff
            log.warning(
                "delivery of %s deferred (%s); pausing claims for %.1fs",
                claim.notification_id,
                error,
                self._failure_backoff,
            )
            await self._release(claim, self._failure_backoff)
        except asyncio.CancelledError:
            # Cut off at shutdown: hand it back now rather than when the lease lapses.
            await asyncio.shield(self._release(claim, 0.0))
            raise
        except Exception:
            log.exception("delivery of %s failed unexpectedly", claim.notification_id)

    async def _release(self, claim: Claim, delay: float) -> None:
        now = self._clock.now()
        # If Redis is down too, the lease lapses and recovery returns the item instead.
        with contextlib.suppress(Unavailable):
            await self._scheduler.retry_at(claim, now + timedelta(seconds=delay), now)

    async def _housekeeping(self) -> None:
        recovered = await self._scheduler.recover_expired_leases(self._clock.now(), 1000)
        if recovered:
            log.warning("recovered %d expired leases", recovered)
        requeued = await self._reconcile.execute()
        if self._prune_inbox is not None:
            # Limits itself to once an hour.
            await self._prune_inbox.execute()
        if requeued:
            log.warning("reconciler re-enqueued %d notifications missing from Redis", requeued)

    async def _drain(self, grace: float) -> None:
        if not self._in_flight:
            return
        log.info(
            "worker stopping: waiting up to %.0fs for %d deliveries", grace, len(self._in_flight)
        )
        _, pending = await asyncio.wait(self._in_flight, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            log.warning(
                "%d deliveries cut off; their leases will lapse and be retried", len(pending)
            )

    @staticmethod
    async def _sleep(stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)
