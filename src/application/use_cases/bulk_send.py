"""BulkSend: one message to up to 1000 recipients; each recipient accepted or refused alone."""

from __future__ import annotations

from dataclasses import dataclass

from application.errors import IdempotencyConflict
from application.fingerprint import fingerprint
from application.ports.clock import Clock, IdGenerator
from application.ports.repositories import UnitOfWorkFactory
from application.ports.scheduler import Scheduler
from application.principal import Principal
from application.use_cases.commands import BulkSendCommand
from application.use_cases.preparation import (
    NotificationPreparer,
    check_channel,
    check_content_source,
)
from application.use_cases.send_notification import queue_item
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
    ) -> None:
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
        job_fingerprint = fingerprint(
            [command.for_recipient(i).meaning() for i in range(len(command.recipients))]
        )
        job = BulkJob(
            id=self._ids.new_id(),
            tenant_id=principal.tenant_id,
            caller=principal.service,
            request_id=command.request_id,
            request_fingerprint=job_fingerprint,
            recipient_count=len(command.recipients),
            accepted_count=0,
            created_at=now,
        )
        results: list[RecipientOutcome] = []
        prepared: list[tuple[int, Notification]] = []
        for index, recipient in enumerate(command.recipients):
            try:
                n = await self._preparer.prepare(
                    command.for_recipient(index), principal, now, bulk_job_id=job.id
                )
            except DomainError as error:
                results.append(
                    RecipientOutcome(index, recipient.user_id, refusal=_refusal(index, error))
                )
                continue
            prepared.append((index, n))
        async with self._uow() as uow:
            if not await uow.bulk_jobs.add(job):
                existing = await uow.bulk_jobs.get_by_request_id(
                    principal.tenant_id, command.request_id
                )
                assert existing is not None
                if existing.request_fingerprint != job_fingerprint:
                    raise IdempotencyConflict(command.request_id, existing.id)
                # A replay: every recipient's derived request_id returns its first result.
                job = existing
                for _, n in prepared:
                    n.bulk_job_id = job.id
            inserted = await uow.notifications.add_many([n for _, n in prepared])
            for index, n in prepared:
                if n.id in inserted:
                    results.append(RecipientOutcome(index, n.user_id, notification=n))
                    continue
                existing_n = await uow.notifications.get_by_request_id(
                    principal.tenant_id, n.request_id
                )
                if existing_n is None or existing_n.request_fingerprint != n.request_fingerprint:
                    results.append(
                        RecipientOutcome(
                            index,
                            n.user_id,
                            refusal=Refusal(
                                "ALREADY_EXISTS",
                                f"recipients[{index}]",
                                f"request_id {n.request_id!r} was used for another request",
                            ),
                        )
                    )
                else:
                    results.append(RecipientOutcome(index, n.user_id, notification=existing_n))
            results.sort(key=lambda r: r.index)
            job.accepted_count = sum(1 for r in results if r.notification is not None)
            await uow.bulk_jobs.save(job)
            await uow.commit()
        queued = [
            queue_item(r.notification)
            for r in results
            if r.notification is not None and r.notification.status is Status.QUEUED
        ]
        if queued:
            await self._scheduler.enqueue(queued, now)
        return BulkOutcome(job, results)
