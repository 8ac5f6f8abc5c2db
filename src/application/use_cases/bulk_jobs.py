"""GetBulkJob, ListBulkJobRecipients and CancelBulkJob: a bulk job's progress, its recipients
one page at a time, and stopping what it has not sent yet."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from application.errors import ConcurrentUpdate
from application.ports.clock import Clock
from application.ports.repositories import BulkJobRecipientView, UnitOfWork, UnitOfWorkFactory
from application.ports.scheduler import Scheduler
from application.principal import Principal
from application.use_cases import paging
from domain.bulk_job import BulkJob, BulkJobProgress, BulkJobState, check_job_id
from domain.errors import NotFound, ValidationFailed
from domain.notification import UNSENT

DEFAULT_PAGE_SIZE = 100
# Notifications loaded, cancelled and saved per transaction: bounded locks and memory.
CANCEL_CHUNK = 500
# Transactions per chunk: those a worker changed between our load and our save are loaded
# again and cancelled as they now are, this many times at most.
CANCEL_ROUNDS = 3


@dataclass(frozen=True, slots=True)
class BulkJobReport:
    job: BulkJob
    progress: BulkJobProgress

    @property
    def state(self) -> BulkJobState:
        return self.job.current_state(self.progress)


async def _load(
    uow: UnitOfWork, tenant_id: str, job_id: str, *, for_update: bool = False
) -> BulkJob:
    job = await uow.bulk_jobs.get(tenant_id, job_id, for_update=for_update)
    if job is None:
        raise NotFound("bulk job", job_id)
    return job


async def _report(uow: UnitOfWork, tenant_id: str, job_id: str) -> BulkJobReport:
    job = await _load(uow, tenant_id, job_id)
    return BulkJobReport(job, await uow.bulk_jobs.progress(tenant_id, job_id))


class GetBulkJob:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def execute(self, principal: Principal, job_id: str) -> BulkJobReport:
        check_job_id(job_id)
        async with self._uow() as uow:
            return await _report(uow, principal.tenant_id, job_id)


class ListBulkJobRecipients:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def execute(
        self, principal: Principal, job_id: str, page_size: int, page_token: str
    ) -> tuple[list[BulkJobRecipientView], str]:
        check_job_id(job_id)
        size = paging.page_size(page_size, DEFAULT_PAGE_SIZE)
        request = {"job_id": job_id}
        position = paging.decode_page_token(page_token, request)
        after = -1
        if position is not None:
            after = position.get("after", -1)
            if not isinstance(after, int) or isinstance(after, bool) or after < 0:
                raise ValidationFailed.single("page_token", "is not a token this API issued")
        async with self._uow() as uow:
            await _load(uow, principal.tenant_id, job_id)
            # One extra row tells whether another page follows.
            found = await uow.bulk_jobs.recipients(principal.tenant_id, job_id, after, size + 1)
        page = found[:size]
        token = ""
        if len(found) > size:
            token = paging.encode_page_token({"after": page[-1].recipient.position}, request)
        return page, token


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    report: BulkJobReport
    # Notifications this call cancelled (0 when the job was cancelled already).
    cancelled: int


class CancelBulkJob:
    def __init__(self, uow: UnitOfWorkFactory, scheduler: Scheduler, clock: Clock) -> None:
        self._uow = uow
        self._scheduler = scheduler
        self._clock = clock

    async def execute(self, principal: Principal, job_id: str) -> CancelOutcome:
        check_job_id(job_id)
        tenant_id = principal.tenant_id
        now = self._clock.now()
        # First the job, so that no call adds to it once we start cancelling; the row lock
        # waits for a call adding to it right now, whose notifications are then swept too.
        async with self._uow() as uow:
            job = await _load(uow, tenant_id, job_id, for_update=True)
            if job.cancel(now):
                await uow.bulk_jobs.save(job)
                await uow.commit()
        # Then its notifications, a chunk per transaction. Sweeping again on a repeated cancel
        # finishes what an interrupted one left. Those being sent finish their attempt, and
        # dead letters stay, but neither is tried again.
        cancelled = 0
        after_id = ""
        while True:
            async with self._uow() as uow:
                ids = await uow.bulk_jobs.unsent_notification_ids(
                    tenant_id, job_id, after_id, CANCEL_CHUNK
                )
            if not ids:
                break
            cancelled += await self._sweep(tenant_id, ids, now)
            after_id = ids[-1]
        async with self._uow() as uow:
            return CancelOutcome(await _report(uow, tenant_id, job_id), cancelled)

    async def _sweep(self, tenant_id: str, ids: Sequence[str], now: datetime) -> int:
        """Cancel those of ``ids`` still unsent; returns how many were cancelled outright. One
        a worker changed between our load and our save (it claimed it) is loaded again, a few
        rounds at most; the rest are committed meanwhile (ConcurrentUpdate if it never held
        still: a repeated cancel finishes it)."""
        cancelled = 0
        pending = list(ids)
        for _ in range(CANCEL_ROUNDS):
            done: list[str] = []
            moved: list[str] = []
            async with self._uow() as uow:
                for n in await uow.notifications.get_many(tenant_id, pending, for_update=True):
                    if n.status not in UNSENT:
                        continue
                    if not n.request_cancel(now):
                        # Its worker holds it: the request must not compete with its outcome.
                        await uow.notifications.record_cancel_request(n)
                        continue
                    try:
                        await uow.notifications.save(n)
                    except ConcurrentUpdate:
                        moved.append(n.id)
                        continue
                    done.append(n.id)
                await uow.commit()
            # The record is what counts: a worker that still claims one sees CANCELLED.
            for notification_id in done:
                await self._scheduler.remove(notification_id)
            cancelled += len(done)
            if not moved:
                return cancelled
            pending = moved
        raise ConcurrentUpdate("notification", pending[0])
