"""BulkSend: one message to up to 1000 recipients; each recipient accepted or refused alone."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from application.errors import IdempotencyConflict
from application.fingerprint import fingerprint
from application.ports.clock import Clock, IdGenerator
from application.ports.repositories import UnitOfWork, UnitOfWorkFactory
from application.ports.scheduler import Scheduler
from application.principal import Principal
from application.use_cases.commands import BulkSendCommand
from application.use_cases.policy_gate import PolicyGate, category_of
from application.use_cases.preparation import (
    NotificationPreparer,
    Prepared,
    check_channel,
    check_content_source,
)
from application.use_cases.send_notification import earlier_answer, queue_item
from domain.bulk_job import MAX_BULK_RECIPIENTS, BulkJob
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


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str
    field: str
    description: str


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    index: int
    user_id: str
    notification: Notification | None = None
    refusal: Refusal | None = None
    # ``notification`` is an earlier one with the same content (duplicate detection).
    deduplicated: bool = False


@dataclass(frozen=True, slots=True)
class BulkOutcome:
    job: BulkJob
    results: list[RecipientOutcome]

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


class BulkSend:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        scheduler: Scheduler,
        preparer: NotificationPreparer,
        clock: Clock,
        ids: IdGenerator,
        gate: PolicyGate | None = None,
    ) -> None:
        self._gate = gate or PolicyGate()
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
        now = self._clock.now()
        tenant_id = principal.tenant_id
        job_fingerprint = fingerprint(
            [command.for_recipient(i).meaning() for i in range(len(command.recipients))]
        )
        job = BulkJob(
            id=self._ids.new_id(),
            tenant_id=tenant_id,
            caller=principal.service,
            request_id=command.request_id,
            request_fingerprint=job_fingerprint,
            recipient_count=len(command.recipients),
            accepted_count=0,
            created_at=now,
        )
        results: list[RecipientOutcome] = []
        async with self._uow() as uow:
            directory = await uow.recipients.get_many(
                tenant_id, [r.user_id for r in command.recipients]
            )
            category = await category_of(uow, tenant_id, command.category)
            prepared: list[tuple[int, Prepared]] = []
            for index, recipient in enumerate(command.recipients):
                try:
                    p = await self._preparer.prepare(
                        command.for_recipient(index),
                        principal,
                        now,
                        directory.get(recipient.user_id),
                        bulk_job_id=job.id,
                    )
                except DomainError as error:
                    results.append(
                        RecipientOutcome(index, recipient.user_id, refusal=_refusal(index, error))
                    )
                    continue
                prepared.append((index, p))
            if not await uow.bulk_jobs.add(job):
                existing_job = await uow.bulk_jobs.get_by_request_id(tenant_id, command.request_id)
                assert existing_job is not None
                if existing_job.request_fingerprint != job_fingerprint:
                    raise IdempotencyConflict(command.request_id, existing_job.id)
                # A replay: every recipient's derived request_id returns its first answer.
                job = existing_job
                prepared = [(i, replace(p, bulk_job_id=job.id)) for i, p in prepared]
                fresh = []
                for index, p in prepared:
                    answer = await self._earlier(uow, index, p)
                    if answer is None:
                        fresh.append((index, p))
                    else:
                        results.append(answer)
                prepared = fresh
            results += await self._admit_all(uow, prepared, category, directory, now)
            results.sort(key=lambda r: r.index)
            job.accepted_count = sum(1 for r in results if r.notification is not None)
            await uow.bulk_jobs.save(job)
            await uow.commit()
        queued = [
            queue_item(r.notification)
            for r in results
            if r.notification is not None
            and r.notification.status is Status.QUEUED
            and not r.deduplicated
        ]
        if queued:
            await self._scheduler.enqueue(queued, now)
        return BulkOutcome(job, results)

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
        results: list[RecipientOutcome] = []
        batch: list[Notification] = []
        pending: list[tuple[int, Prepared, Notification]] = []
        for index, p in prepared:
            admission = await self._gate.admit(
                uow, p, category, directory.get(p.user_id), now, batch
            )
            n = admission.notification
            if not admission.duplicate:
                batch.append(n)
                pending.append((index, p, n))
            elif await uow.notifications.add_alias(
                tenant_id, p.new.request_id, p.fingerprint, n.id, now
            ):
                results.append(
                    RecipientOutcome(index, p.user_id, notification=n, deduplicated=True)
                )
            else:
                results.append(await self._earlier_or_refusal(uow, index, p))
        inserted = await uow.notifications.add_many(batch)
        for index, p, n in pending:
            if n.id in inserted:
                results.append(RecipientOutcome(index, p.user_id, notification=n))
            else:
                results.append(await self._earlier_or_refusal(uow, index, p))
        return results

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

    async def _earlier_or_refusal(
        self, uow: UnitOfWork, index: int, p: Prepared
    ) -> RecipientOutcome:
        answer = await self._earlier(uow, index, p)
        assert answer is not None, "insert conflicted but no row holds the request_id"
        return answer


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
