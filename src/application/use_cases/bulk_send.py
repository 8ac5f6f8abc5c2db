"""BulkSend: one message to up to 1000 recipients per call; each recipient accepted or refused
alone. Calls naming the same job extend it; a call's request_id makes it idempotent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from application.errors import ConcurrentUpdate, IdempotencyConflict
from application.fingerprint import fingerprint
from application.ports.clock import Clock, IdGenerator
from application.ports.delivery_observer import (
    AcceptanceObserver,
    AcceptanceOutcome,
    NoObserver,
    tell,
)
from application.ports.repositories import BulkJobCall, UnitOfWork, UnitOfWorkFactory
from application.ports.scheduler import Scheduler
from application.principal import Principal
from application.retries import rerun_on
from application.use_cases.commands import BulkSendCommand
from application.use_cases.policy_gate import PolicyGate, category_of
from application.use_cases.preparation import (
    NotificationPreparer,
    Prepared,
    check_channel,
    check_content_source,
)
from application.use_cases.send_notification import earlier_answer, queue_item, store_admitted
from domain.bulk_job import (
    MAX_BULK_RECIPIENTS,
    BulkJob,
    BulkJobRecipient,
    Refusal,
    check_job_id,
)
from domain.errors import (
    DomainError,
    FieldViolation,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
    Violations,
)
from domain.notification import MAX_REQUEST_ID_CHARS, Notification, Status
from domain.policy import Category
from domain.recipient import Recipient

__all__ = ["BulkOutcome", "BulkSend", "RecipientOutcome", "Refusal"]

# A call that loses a race (the same request_id, or a new job id, committed by another call
# meanwhile) starts over once and then sees what the winner wrote.
_ATTEMPTS = 3


class _Raced(Exception):
    """Another transaction committed the request_id or the job id this call was about to take."""


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    index: int
    user_id: str
    notification: Notification | None = None
    refusal: Refusal | None = None
    # ``notification`` is an earlier one with the same content (duplicate detection).
    deduplicated: bool = False
    # ``notification`` was stored by this call (not an earlier answer, not a duplicate).
    stored: bool = False


@dataclass(frozen=True, slots=True)
class BulkOutcome:
    job: BulkJob
    results: list[RecipientOutcome]
    # The position in the job of this call's first recipient.
    first_position: int = 0
    # A retry: the results are those of the call's first run, and nothing was added.
    replayed: bool = False

    @property
    def accepted(self) -> int:
        return sum(1 for r in self.results if r.notification is not None)


def _refusal(index: int, error: DomainError) -> Refusal:
    prefix = f"recipients[{index}]."
    if isinstance(error, ValidationFailed):
        first: FieldViolation = error.violations[0]
        return Refusal("INVALID_ARGUMENT", prefix + first.field, str(error))
    if isinstance(error, NotFound):
        return Refusal("NOT_FOUND", prefix + error.kind, str(error))
    if isinstance(error, PreconditionFailed):
        return Refusal("FAILED_PRECONDITION", prefix + error.subject, error.description)
    return Refusal("FAILED_PRECONDITION", prefix.rstrip("."), str(error))


def _record(first_position: int, request_id: str, r: RecipientOutcome) -> BulkJobRecipient:
    return BulkJobRecipient(
        position=first_position + r.index,
        request_id=request_id,
        call_index=r.index,
        user_id=r.user_id,
        notification_id=r.notification.id if r.notification is not None else None,
        deduplicated=r.deduplicated,
        refusal=r.refusal,
    )


class BulkSend:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        scheduler: Scheduler,
        preparer: NotificationPreparer,
        clock: Clock,
        ids: IdGenerator,
        gate: PolicyGate | None = None,
        observer: AcceptanceObserver | None = None,
    ) -> None:
        self._gate = gate or PolicyGate()
        self._observer: AcceptanceObserver = observer or NoObserver()
        self._uow = uow
        self._scheduler = scheduler
        self._preparer = preparer
        self._clock = clock
        self._ids = ids

    def _check_shared(self, command: BulkSendCommand) -> None:
        v = Violations()
        if not command.request_id:
            v.add("request_id", "required: a unique key that makes retries safe")
        elif len(command.request_id) > MAX_REQUEST_ID_CHARS - 6:
            v.add("request_id", f"longer than {MAX_REQUEST_ID_CHARS - 6} characters")
        if command.job_id:
            try:
                check_job_id(command.job_id)
            except ValidationFailed as error:
                v.extend(error)
        if not command.category.strip():
            v.add("category", "required (the notification type, e.g. order_shipped)")
        if not command.recipients:
            v.add("recipients", "at least one recipient is required")
        elif len(command.recipients) > MAX_BULK_RECIPIENTS:
            v.add(
                "recipients",
                f"{len(command.recipients)} recipients; at most {MAX_BULK_RECIPIENTS} per call",
            )
        v.raise_if_any()
        check_channel(command.channel, self._preparer.channels)
        check_content_source(command.content, command.template is not None)

    async def execute(self, principal: Principal, command: BulkSendCommand) -> BulkOutcome:
        self._check_shared(command)
        outcome = await self._run_until_settled(principal, command)
        if not outcome.replayed:
            # Counted once stored, like a single send: a failed enqueue below is repaired by a
            # replay or the reconciler, and neither is a new acceptance.
            tell(lambda: self._observe(outcome))
        # Enqueueing after the commit: if it fails the caller gets UNAVAILABLE, and its retry
        # (a replay) enqueues again; the reconciler covers a caller that never retries.
        queued = [
            queue_item(r.notification)
            for r in outcome.results
            if r.notification is not None
            and r.notification.status is Status.QUEUED
            and not r.deduplicated
        ]
        if queued:
            await self._scheduler.enqueue(queued, self._clock.now())
        return outcome

    def _observe(self, outcome: BulkOutcome) -> None:
        for r in outcome.results:
            if r.stored and r.notification is not None:
                n = r.notification
                accepted = (
                    AcceptanceOutcome.SUPPRESSED
                    if n.status is Status.SUPPRESSED
                    else AcceptanceOutcome.QUEUED
                )
                self._observer.notification_accepted(n.channel, n.priority, accepted)

    async def _run_until_settled(
        self, principal: Principal, command: BulkSendCommand
    ) -> BulkOutcome:
        try:
            return await rerun_on(_Raced, _ATTEMPTS, lambda: self._run(principal, command))
        except _Raced as error:
            raise ConcurrentUpdate("bulk job", command.job_id or command.request_id) from error

    async def _run(self, principal: Principal, command: BulkSendCommand) -> BulkOutcome:
        now = self._clock.now()
        tenant_id = principal.tenant_id
        call_fingerprint = fingerprint(command.meaning())
        async with self._uow() as uow:
            call = await uow.bulk_jobs.get_call(tenant_id, command.request_id)
            if call is not None:
                if call.request_fingerprint != call_fingerprint:
                    raise IdempotencyConflict(command.request_id, call.job_id)
                return await self._replay(uow, principal, command, call, now)

            job_id = command.job_id or self._ids.new_id()
            directory = await uow.recipients.get_many(
                tenant_id, [r.user_id for r in command.recipients]
            )
            category = await category_of(uow, tenant_id, command.category)
            results, prepared = await self._prepare(
                principal, command, range(len(command.recipients)), directory, job_id, now
            )
            # The job row is locked from here to the commit: concurrent extensions take turns.
            job, first_position = await self._open_job(
                uow, principal, command, job_id, call_fingerprint, now
            )
            recorded = await uow.bulk_jobs.add_call(
                BulkJobCall(
                    tenant_id=tenant_id,
                    request_id=command.request_id,
                    job_id=job.id,
                    request_fingerprint=call_fingerprint,
                    first_position=first_position,
                    count=len(command.recipients),
                    created_at=now,
                )
            )
            if not recorded:
                raise _Raced
            results += await self._admit_all(uow, prepared, category, directory, now)
            results.sort(key=lambda r: r.index)
            await uow.bulk_jobs.add_recipients(
                tenant_id,
                job.id,
                [_record(first_position, command.request_id, r) for r in results],
            )
            job.count_accepted(sum(1 for r in results if r.notification is not None))
            await uow.bulk_jobs.save(job)
            await uow.commit()
        return BulkOutcome(job, results, first_position)

    async def _open_job(
        self,
        uow: UnitOfWork,
        principal: Principal,
        command: BulkSendCommand,
        job_id: str,
        call_fingerprint: str,
        now: datetime,
    ) -> tuple[BulkJob, int]:
        """The job this call adds to, locked, and the position of the call's first recipient."""
        count = len(command.recipients)
        if command.job_id:
            job = await uow.bulk_jobs.get(principal.tenant_id, job_id, for_update=True)
            if job is not None:
                return job, job.extend(command.channel, command.category, count, now)
        job = BulkJob.start(
            id=job_id,
            tenant_id=principal.tenant_id,
            caller=principal.service,
            request_id=command.request_id,
            request_fingerprint=call_fingerprint,
            channel=command.channel,
            category=command.category,
            count=count,
            now=now,
        )
        if not await uow.bulk_jobs.add(job):
            # A concurrent call created a job with this id, or with this request_id.
            raise _Raced
        return job, 0

    async def _prepare(
        self,
        principal: Principal,
        command: BulkSendCommand,
        indexes: Sequence[int],
        directory: Mapping[str, Recipient],
        job_id: str,
        now: datetime,
    ) -> tuple[list[RecipientOutcome], list[tuple[int, Prepared]]]:
        """Each recipient's own checks: refusals, and the sends that passed them."""
        refused: list[RecipientOutcome] = []
        prepared: list[tuple[int, Prepared]] = []
        for index in indexes:
            user_id = command.recipients[index].user_id
            try:
                p = await self._preparer.prepare(
                    command.for_recipient(index),
                    principal,
                    now,
                    directory.get(user_id),
                    bulk_job_id=job_id,
                )
            except DomainError as error:
                refused.append(RecipientOutcome(index, user_id, refusal=_refusal(index, error)))
                continue
            prepared.append((index, p))
        return refused, prepared

    async def _replay(
        self,
        uow: UnitOfWork,
        principal: Principal,
        command: BulkSendCommand,
        call: BulkJobCall,
        now: datetime,
    ) -> BulkOutcome:
        """What the call's first run answered, from what it recorded; nothing is added."""
        tenant_id = principal.tenant_id
        job = await uow.bulk_jobs.get(tenant_id, call.job_id)
        if job is None:
            raise NotFound("bulk job", call.job_id)
        views = await uow.bulk_jobs.recipients(
            tenant_id, call.job_id, call.first_position - 1, call.count
        )
        recorded = {
            v.recipient.call_index: v.recipient
            for v in views
            if v.recipient.request_id == call.request_id
        }
        found = await uow.notifications.get_many(
            tenant_id, [r.notification_id for r in recorded.values() if r.notification_id]
        )
        notifications = {n.id: n for n in found}
        results: list[RecipientOutcome] = []
        unrecorded: list[int] = []
        for index, recipient in enumerate(command.recipients):
            row = recorded.get(index)
            if row is None:
                unrecorded.append(index)
            elif row.notification_id is None:
                results.append(RecipientOutcome(index, recipient.user_id, refusal=row.refusal))
            elif (n := notifications.get(row.notification_id)) is not None:
                results.append(
                    RecipientOutcome(
                        index, recipient.user_id, notification=n, deduplicated=row.deduplicated
                    )
                )
            else:
                unrecorded.append(index)
        if unrecorded:
            results += await self._replay_unrecorded(uow, principal, command, job, unrecorded, now)
        results.sort(key=lambda r: r.index)
        return BulkOutcome(job, results, call.first_position, replayed=True)

    async def _replay_unrecorded(
        self,
        uow: UnitOfWork,
        principal: Principal,
        command: BulkSendCommand,
        job: BulkJob,
        indexes: list[int],
        now: datetime,
    ) -> list[RecipientOutcome]:
        """Calls made before per-recipient results were recorded: each recipient's derived
        request_id finds the notification it got; one that got none is refused again."""
        directory = await uow.recipients.get_many(
            principal.tenant_id, [command.recipients[i].user_id for i in indexes]
        )
        results, prepared = await self._prepare(principal, command, indexes, directory, job.id, now)
        for index, p in prepared:
            answer = await self._earlier(uow, index, p)
            results.append(
                answer
                if answer is not None
                else RecipientOutcome(
                    index,
                    p.user_id,
                    refusal=Refusal(
                        "FAILED_PRECONDITION",
                        f"recipients[{index}]",
                        "refused by the first call with this request_id; "
                        "send it again with a new request_id",
                    ),
                )
            )
        return results

    async def _admit_all(
        self,
        uow: UnitOfWork,
        prepared: list[tuple[int, Prepared]],
        category: Category,
        directory: Mapping[str, Recipient],
        now: datetime,
    ) -> list[RecipientOutcome]:
        """The policy step for each recipient, in request order, then one insert for all."""
        if not prepared:
            return []
        tenant_id = prepared[0][1].tenant_id
        await self._gate.lock(
            uow, tenant_id, category, [(p.user_id, directory.get(p.user_id)) for _, p in prepared]
        )
        outcomes = await store_admitted(
            uow, self._gate, [(p, category, directory.get(p.user_id)) for _, p in prepared], now
        )
        return [
            _reused(index, p)
            if isinstance(outcome, IdempotencyConflict)
            else RecipientOutcome(
                index,
                p.user_id,
                notification=outcome.notification,
                deduplicated=outcome.deduplicated,
                stored=not outcome.replayed and not outcome.deduplicated,
            )
            for (index, p), outcome in zip(prepared, outcomes, strict=True)
        ]

    async def _earlier(self, uow: UnitOfWork, index: int, p: Prepared) -> RecipientOutcome | None:
        try:
            answer = await earlier_answer(uow, p)
        except IdempotencyConflict:
            return _reused(index, p)
        if answer is None:
            return None
        return RecipientOutcome(
            index, p.user_id, notification=answer.notification, deduplicated=answer.deduplicated
        )


def _reused(index: int, p: Prepared) -> RecipientOutcome:
    return RecipientOutcome(
        index,
        p.user_id,
        refusal=Refusal(
            "ALREADY_EXISTS",
            f"recipients[{index}]",
            f"request_id {p.new.request_id!r} was used for another request",
        ),
    )
