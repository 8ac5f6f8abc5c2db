"""The recipient directory: upsert, get, erase, and the recipient's own preferences."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from application.ports.clock import Clock
from application.ports.repositories import UnitOfWork, UnitOfWorkFactory
from application.ports.scheduler import Scheduler
from application.principal import Principal
from application.use_cases.recipient_input import (
    PreferencesInput,
    RecipientInput,
    parse_preferences,
    parse_recipient,
    require_user_id,
)
from domain.errors import IllegalTransition, NotFound
from domain.recipient import Profile, Recipient

log = logging.getLogger(__name__)

# Notifications erased per transaction: bounded so one user's long history neither holds
# locks for long nor builds one huge transaction.
ERASE_PAGE_SIZE = 200


@dataclass(frozen=True, slots=True)
class UpsertOutcome:
    recipient: Recipient
    created: bool


@dataclass(frozen=True, slots=True)
class ErasureOutcome:
    erased: int
    cancelled: int
    # Being sent at the time of the erasure: left to their worker, still holding the address.
    skipped_sending: int = 0


async def _load_or_register(
    uow: UnitOfWork, principal: Principal, user_id: str, now: datetime
) -> Recipient:
    """Preferences may arrive before any contact data (e.g. from an unsubscribe link), so a
    missing recipient is created bare rather than refused."""
    found = await uow.recipients.get(principal.tenant_id, user_id)
    if found is not None:
        return found
    return Recipient.register(principal.tenant_id, user_id, Profile(), None, now)


class UpsertRecipient:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow = uow
        self._clock = clock

    async def execute(
        self, principal: Principal, recipient: RecipientInput, preferences: PreferencesInput | None
    ) -> UpsertOutcome:
        """Preferences None keeps the stored ones (or none, for a new recipient)."""
        profile, prefs = parse_recipient(recipient, preferences)
        now = self._clock.now()
        async with self._uow() as uow:
            stored = await uow.recipients.get(principal.tenant_id, recipient.user_id)
            if stored is None:
                stored = Recipient.register(
                    principal.tenant_id, recipient.user_id, profile, prefs, now
                )
                created = True
            else:
                stored.update_profile(profile, now)
                if prefs is not None:
                    stored.set_preferences(prefs, now)
                created = False
            await uow.recipients.save(stored)
            await uow.commit()
        return UpsertOutcome(stored, created)


class GetRecipient:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def execute(self, principal: Principal, user_id: str) -> Recipient:
        require_user_id(user_id)
        async with self._uow() as uow:
            found = await uow.recipients.get(principal.tenant_id, user_id)
        if found is None:
            raise NotFound("recipient", user_id)
        return found


class UpdatePreferences:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow = uow
        self._clock = clock

    async def execute(
        self, principal: Principal, user_id: str, preferences: PreferencesInput
    ) -> Recipient:
        prefs = parse_preferences(user_id, preferences)
        now = self._clock.now()
        async with self._uow() as uow:
            recipient = await _load_or_register(uow, principal, user_id, now)
            recipient.set_preferences(prefs, now)
            await uow.recipients.save(recipient)
            await uow.commit()
        return recipient


class UnsubscribeFromMarketing:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow = uow
        self._clock = clock

    async def execute(self, principal: Principal, user_id: str) -> Recipient:
        require_user_id(user_id)
        now = self._clock.now()
        async with self._uow() as uow:
            recipient = await _load_or_register(uow, principal, user_id, now)
            recipient.unsubscribe_from_marketing(now)
            await uow.recipients.save(recipient)
            await uow.commit()
        return recipient


class DeleteRecipient:
    """Erase a recipient: the directory entry, and the personal data in their delivery records.

    The directory entry goes in the first transaction, so sends that rely on the directory stop
    at once; the records follow page by page. A retry after a failure part-way finishes the job
    (records already erased are not visited again); NOT_FOUND only when nothing was left."""

    def __init__(self, uow: UnitOfWorkFactory, scheduler: Scheduler, clock: Clock) -> None:
        self._uow = uow
        self._scheduler = scheduler
        self._clock = clock

    async def execute(self, principal: Principal, user_id: str) -> ErasureOutcome:
        require_user_id(user_id)
        erased = cancelled = skipped = 0
        deleted = False
        after_id = ""
        while True:
            now = self._clock.now()
            cancelled_ids: list[str] = []
            async with self._uow() as uow:
                if after_id == "":
                    deleted = await uow.recipients.delete(principal.tenant_id, user_id)
                ids = await uow.notifications.ids_for_user(
                    principal.tenant_id, user_id, after_id, ERASE_PAGE_SIZE
                )
                for n in await uow.notifications.get_many(
                    principal.tenant_id, ids, for_update=True
                ):
                    try:
                        if n.erase(now):
                            cancelled_ids.append(n.id)
                    except IllegalTransition:
                        # Its worker holds it and will write its outcome; erasing under it
                        # would lose that write. A later DeleteRecipient erases it.
                        skipped += 1
                        continue
                    await uow.notifications.save(n)
                    erased += 1
                await uow.commit()
            cancelled += len(cancelled_ids)
            # After the commit, as CancelNotification does: a worker that still claims one
            # sees CANCELLED in the record and drops it.
            for notification_id in cancelled_ids:
                await self._scheduler.remove(notification_id)
            if len(ids) < ERASE_PAGE_SIZE:
                break
            after_id = ids[-1]
        if not deleted and erased == 0 and skipped == 0:
            raise NotFound("recipient", user_id)
        if skipped:
            # The user id is left out: this log outlives the erasure it reports.
            log.info(
                "erasure in tenant %s skipped %d notifications being sent",
                principal.tenant_id,
                skipped,
            )
        return ErasureOutcome(erased, cancelled, skipped)
