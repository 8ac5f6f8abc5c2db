"""SendNotification: accept one notification, decide its fate, persist it, queue it."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from application.errors import ApplicationError, IdempotencyConflict, Unavailable
from application.group_commit import GroupCommit, unless_unavailable
from application.ports.clock import Clock
from application.ports.delivery_observer import (
    AcceptanceObserver,
    AcceptanceOutcome,
    NoObserver,
    tell,
)
from application.ports.repositories import UnitOfWork, UnitOfWorkFactory
from application.ports.scheduler import QueueItem, Scheduler
from application.principal import Principal
from application.use_cases.commands import SendNotificationCommand
from application.use_cases.policy_gate import Admission, AdmittedBatch, PolicyGate, category_of
from application.use_cases.preparation import NotificationPreparer, Prepared
from domain.errors import DomainError
from domain.notification import Notification, Status
from domain.policy import Category
from domain.recipient import Recipient


@dataclass(frozen=True, slots=True)
class SendOutcome:
    notification: Notification
    replayed: bool
    # The same content went to the same recipient and channel within the duplicate window:
    # ``notification`` is that earlier one.
    deduplicated: bool = False


def queue_item(n: Notification) -> QueueItem:
    return QueueItem(n.id, n.priority, n.due_at)


async def _answer_from(
    uow: UnitOfWork,
    prepared: Prepared,
    stored: Notification | None,
    alias: tuple[str, str] | None,
) -> SendOutcome | None:
    """The earlier answer given what was found under the request_id: a notification stored
    for it, or the alias of one it was folded into. ALREADY_EXISTS if the request differs."""
    request_id = prepared.new.request_id
    if stored is not None:
        if stored.request_fingerprint != prepared.fingerprint:
            raise IdempotencyConflict(request_id, stored.id)
        return SendOutcome(stored, replayed=True)
    if alias is None:
        return None
    fingerprint, notification_id = alias
    if fingerprint != prepared.fingerprint:
        raise IdempotencyConflict(request_id, notification_id)
    folded_into = await uow.notifications.get(prepared.tenant_id, notification_id)
    return SendOutcome(folded_into, replayed=True, deduplicated=True)


async def folded_answer(uow: UnitOfWork, prepared: Prepared) -> SendOutcome | None:
    """What an earlier request with this request_id got if it was folded into another
    notification as a duplicate; None if it was not. ALREADY_EXISTS if the request differs."""
    alias = await uow.notifications.get_alias(prepared.tenant_id, prepared.new.request_id)
    return await _answer_from(uow, prepared, None, alias)


async def earlier_answer(uow: UnitOfWork, prepared: Prepared) -> SendOutcome | None:
    """What an earlier request with this request_id got (a notification of its own, or one it
    was folded into as a duplicate); None if the request_id is new. ALREADY_EXISTS if it was
    used for a different request."""
    tenant_id, request_id = prepared.tenant_id, prepared.new.request_id
    stored = await uow.notifications.get_by_request_id(tenant_id, request_id)
    if stored is not None:
        return await _answer_from(uow, prepared, stored, None)
    return await folded_answer(uow, prepared)


# A request decoded from the wire, and who sent it.
Request = tuple[Principal, SendNotificationCommand]

# Concurrent sends of one tenant are stored together, at most this many per transaction, in at
# most this many transactions at once (one writing while the next one gathers).
MAX_BATCH = 256
MAX_BATCHES_IN_FLIGHT = 1


class SendNotification:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        scheduler: Scheduler,
        preparer: NotificationPreparer,
        clock: Clock,
        gate: PolicyGate | None = None,
        observer: AcceptanceObserver | None = None,
        *,
        max_batch: int = MAX_BATCH,
        max_batches_in_flight: int = MAX_BATCHES_IN_FLIGHT,
    ) -> None:
        self._observer: AcceptanceObserver = observer or NoObserver()
        self._uow = uow
        self._scheduler = scheduler
        self._preparer = preparer
        self._clock = clock
        self._gate = gate or PolicyGate()
        self._batches: GroupCommit[str, Request, SendOutcome] = GroupCommit(
            self._send_batch,
            max_batch=max_batch,
            max_in_flight=max_batches_in_flight,
            # A request_id repeated within a batch waits for the first to be stored, then gets
            # its answer (a replay, or ALREADY_EXISTS) as it would alone.
            distinct=lambda request: request[1].request_id,
            # Something one request brought (a NUL character in a text field, say) failed the
            # shared transaction: each request gets a transaction of its own.
            alone_after=unless_unavailable,
        )

    async def execute(self, principal: Principal, command: SendNotificationCommand) -> SendOutcome:
        return await self._batches.submit(principal.tenant_id, (principal, command))

    async def _send_batch(
        self, tenant_id: str, requests: Sequence[Request]
    ) -> list[SendOutcome | BaseException]:
        """Decide and store the batch in one transaction, then queue what it accepted. Each
        request gets the answer it would have got alone."""
        results: list[SendOutcome | BaseException]
        if len(requests) == 1:
            try:
                results = [await self._store_alone(*requests[0])]
            except (DomainError, ApplicationError) as error:
                results = [error]
        else:
            results = await self._store_together(tenant_id, requests)
        stored = {i: r for i, r in enumerate(results) if isinstance(r, SendOutcome)}
        try:
            await self._after_commit(list(stored.values()))
        except Unavailable as error:
            for i in stored:
                results[i] = error
        return results

    async def _after_commit(self, outcomes: Sequence[SendOutcome]) -> None:
        for outcome in outcomes:
            if not outcome.replayed:
                # Counted once stored: a failed enqueue below is repaired by a replay or the
                # reconciler, and neither is a new acceptance.
                tell(functools.partial(self._observe, outcome))
        # Enqueueing after the commit: if it fails the callers get UNAVAILABLE, and their
        # retries (replays) enqueue again; the reconciler covers a caller that never retries.
        queued = [
            queue_item(o.notification)
            for o in outcomes
            if o.notification.status is Status.QUEUED and not o.deduplicated
        ]
        if queued:
            await self._scheduler.enqueue(queued, self._clock.now())

    def _observe(self, outcome: SendOutcome) -> None:
        n = outcome.notification
        if outcome.deduplicated:
            accepted = AcceptanceOutcome.DEDUPLICATED
        elif n.status is Status.SUPPRESSED:
            accepted = AcceptanceOutcome.SUPPRESSED
        else:
            accepted = AcceptanceOutcome.QUEUED
        self._observer.notification_accepted(n.channel, n.priority, accepted)

    async def _store_alone(
        self, principal: Principal, command: SendNotificationCommand
    ) -> SendOutcome:
        now = self._clock.now()
        async with self._uow() as uow:
            recipient = await uow.recipients.get(principal.tenant_id, command.user_id)
            category = await category_of(uow, principal.tenant_id, command.category)
            prepared = await self._preparer.prepare(command, principal, now, recipient)
            return await self._store(uow, prepared, category, recipient, now)

    async def _store(
        self,
        uow: UnitOfWork,
        prepared: Prepared,
        category: Category,
        recipient: Recipient | None,
        now: datetime,
    ) -> SendOutcome:
        # A retry must get its first answer: not be folded into its own first notification
        # (with a duplicate window), and not be sent after all once the window is turned off.
        dedups = self._gate.dedup_window(category) > timedelta(0)
        earlier = await (earlier_answer if dedups else folded_answer)(uow, prepared)
        if earlier is not None:
            return earlier
        await self._gate.lock(uow, prepared.tenant_id, category, [(prepared.user_id, recipient)])
        admission = await self._gate.admit(uow, prepared, category, recipient, now)
        if admission.duplicate:
            outcome = await _bound_to_earlier(uow, prepared, admission, now)
        elif await uow.notifications.add(admission.notification):
            outcome = SendOutcome(admission.notification, replayed=False)
        else:
            return await _conflicted(uow, prepared)
        await uow.commit()
        return outcome

    async def _store_together(
        self, tenant_id: str, requests: Sequence[Request]
    ) -> list[SendOutcome | BaseException]:
        """The steps of _store for many requests of one tenant, with one query per step where
        _store has one per request, and one insert for every new notification."""
        now = self._clock.now()
        indexes = range(len(requests))
        results: dict[int, SendOutcome | BaseException] = {}
        async with self._uow() as uow:
            directory = await uow.recipients.get_many(
                tenant_id, [requests[i][1].user_id for i in indexes]
            )
            categories: dict[str, Category] = {}
            for name in dict.fromkeys(requests[i][1].category for i in indexes):
                categories[name] = await category_of(uow, tenant_id, name)
            prepared: dict[int, Prepared] = {}
            for i in indexes:
                principal, command = requests[i]
                try:
                    prepared[i] = await self._preparer.prepare(
                        command, principal, now, directory.get(command.user_id)
                    )
                except DomainError as error:
                    results[i] = error

            def category(p: Prepared) -> Category:
                return categories[p.new.category]

            request_ids = [p.new.request_id for p in prepared.values()]
            aliases = await uow.notifications.get_aliases(tenant_id, request_ids)
            stored = await uow.notifications.get_by_request_ids(
                tenant_id,
                [
                    p.new.request_id
                    for p in prepared.values()
                    if self._gate.dedup_window(category(p)) > timedelta(0)
                ],
            )
            new: list[tuple[int, Prepared]] = []
            for i, p in prepared.items():
                try:
                    earlier = await _answer_from(
                        uow, p, stored.get(p.new.request_id), aliases.get(p.new.request_id)
                    )
                except IdempotencyConflict as error:
                    results[i] = error
                    continue
                if earlier is not None:
                    results[i] = earlier
                else:
                    new.append((i, p))
            await self._gate.lock_users(
                uow,
                tenant_id,
                (
                    p.user_id
                    for _, p in new
                    if self._gate.needs_lock(category(p), directory.get(p.user_id))
                ),
            )
            outcomes = await store_admitted(
                uow,
                self._gate,
                [(p, category(p), directory.get(p.user_id)) for _, p in new],
                now,
            )
            results |= {i: outcome for (i, _), outcome in zip(new, outcomes, strict=True)}
            await uow.commit()
        return [results[i] for i in indexes]


async def store_admitted(
    uow: UnitOfWork,
    gate: PolicyGate,
    sends: Sequence[tuple[Prepared, Category, Recipient | None]],
    now: datetime,
) -> list[SendOutcome | IdempotencyConflict]:
    """The policy step for each send, in order (those admitted before count like stored
    ones), then one insert for every new notification. A duplicate is bound to the earlier
    notification; a send whose request_id another transaction took meanwhile gets that one's
    answer, or ALREADY_EXISTS (returned, not raised) if it was another request."""
    results: dict[int, SendOutcome | IdempotencyConflict] = {}
    batch = AdmittedBatch()
    for i, (p, category, recipient) in enumerate(sends):
        admission = await gate.admit(uow, p, category, recipient, now, batch)
        if not admission.duplicate:
            batch.add(admission.notification)
            continue
        try:
            results[i] = await _bound_to_earlier(uow, p, admission, now)
        except IdempotencyConflict as error:
            results[i] = error
    inserted = await uow.notifications.add_many(batch.notifications)
    by_id = {n.id: n for n in batch.notifications}
    for i, (p, _, _) in enumerate(sends):
        if i in results:
            continue
        if p.id in inserted:
            results[i] = SendOutcome(by_id[p.id], replayed=False)
            continue
        try:
            results[i] = await _conflicted(uow, p)
        except IdempotencyConflict as error:
            results[i] = error
    return [results[i] for i in range(len(sends))]


async def _bound_to_earlier(
    uow: UnitOfWork, prepared: Prepared, admission: Admission, now: datetime
) -> SendOutcome:
    """The answer for a duplicate: its request_id bound to the earlier notification."""
    bound = await uow.notifications.add_alias(
        prepared.tenant_id,
        prepared.new.request_id,
        prepared.fingerprint,
        admission.notification.id,
        now,
    )
    if not bound:
        # A concurrent retry of this very request bound it first.
        return await _conflicted(uow, prepared)
    return SendOutcome(admission.notification, replayed=False, deduplicated=True)


async def _conflicted(uow: UnitOfWork, prepared: Prepared) -> SendOutcome:
    """The answer for a request whose insert or alias conflicted: another transaction
    committed this request_id meanwhile."""
    answer = await earlier_answer(uow, prepared)
    assert answer is not None, "the request_id conflicted but nothing holds it"
    return answer
