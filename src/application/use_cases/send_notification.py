"""SendNotification: accept one notification, decide its fate, persist it, queue it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from application.errors import IdempotencyConflict
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
from application.use_cases.policy_gate import PolicyGate, category_of
from application.use_cases.preparation import NotificationPreparer, Prepared
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


async def folded_answer(uow: UnitOfWork, prepared: Prepared) -> SendOutcome | None:
    """What an earlier request with this request_id got if it was folded into another
    notification as a duplicate; None if it was not. ALREADY_EXISTS if the request differs."""
    alias = await uow.notifications.get_alias(prepared.tenant_id, prepared.new.request_id)
    if alias is None:
        return None
    fingerprint, notification_id = alias
    if fingerprint != prepared.fingerprint:
        raise IdempotencyConflict(prepared.new.request_id, notification_id)
    folded_into = await uow.notifications.get(prepared.tenant_id, notification_id)
    return SendOutcome(folded_into, replayed=True, deduplicated=True)


async def earlier_answer(uow: UnitOfWork, prepared: Prepared) -> SendOutcome | None:
    """What an earlier request with this request_id got (a notification of its own, or one it
    was folded into as a duplicate); None if the request_id is new. ALREADY_EXISTS if it was
    used for a different request."""
    tenant_id, request_id = prepared.tenant_id, prepared.new.request_id
    existing = await uow.notifications.get_by_request_id(tenant_id, request_id)
    if existing is not None:
        if existing.request_fingerprint != prepared.fingerprint:
            raise IdempotencyConflict(request_id, existing.id)
        return SendOutcome(existing, replayed=True)
    return await folded_answer(uow, prepared)


class SendNotification:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        scheduler: Scheduler,
        preparer: NotificationPreparer,
        clock: Clock,
        gate: PolicyGate | None = None,
        observer: AcceptanceObserver | None = None,
    ) -> None:
        self._observer: AcceptanceObserver = observer or NoObserver()
        self._uow = uow
        self._scheduler = scheduler
        self._preparer = preparer
        self._clock = clock
        self._gate = gate or PolicyGate()

    async def execute(self, principal: Principal, command: SendNotificationCommand) -> SendOutcome:
        now = self._clock.now()
        async with self._uow() as uow:
            recipient = await uow.recipients.get(principal.tenant_id, command.user_id)
            category = await category_of(uow, principal.tenant_id, command.category)
            prepared = await self._preparer.prepare(command, principal, now, recipient)
            outcome = await self._store(uow, prepared, category, recipient, now)
        if not outcome.replayed:
            # Counted once stored: a failed enqueue below is repaired by a replay or the
            # reconciler, and neither is a new acceptance.
            tell(lambda: self._observe(outcome))
        # Enqueueing after the commit: if it fails the caller gets UNAVAILABLE, and its retry
        # (a replay) enqueues again; the reconciler covers a caller that never retries.
        if outcome.notification.status is Status.QUEUED and not outcome.deduplicated:
            await self._scheduler.enqueue([queue_item(outcome.notification)], now)
        return outcome

    def _observe(self, outcome: SendOutcome) -> None:
        n = outcome.notification
        if outcome.deduplicated:
            accepted = AcceptanceOutcome.DEDUPLICATED
        elif n.status is Status.SUPPRESSED:
            accepted = AcceptanceOutcome.SUPPRESSED
        else:
            accepted = AcceptanceOutcome.QUEUED
        self._observer.notification_accepted(n.channel, n.priority, accepted)

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
            bound = await uow.notifications.add_alias(
                prepared.tenant_id,
                prepared.new.request_id,
                prepared.fingerprint,
                admission.notification.id,
                now,
            )
            if not bound:
                # A concurrent retry of this very request bound it first.
                answer = await earlier_answer(uow, prepared)
                assert answer is not None, "alias conflicted but no alias holds the request_id"
                return answer
            await uow.commit()
            return SendOutcome(admission.notification, replayed=False, deduplicated=True)
        if not await uow.notifications.add(admission.notification):
            answer = await earlier_answer(uow, prepared)
            assert answer is not None, "insert conflicted but no row holds the request_id"
            return answer
        await uow.commit()
        return SendOutcome(admission.notification, replayed=False)
