"""The policy step between a checked send and the queue: duplicates, opt-outs, frequency caps,
quiet hours. It runs inside the transaction that stores the notification, so what it counts
is what is stored."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from application.ports.repositories import UnitOfWork
from application.use_cases.preparation import Prepared
from domain.notification import Address, Channel, Decision, Notification, Route, Status, Verdict
from domain.policy import Category, Limits
from domain.policy.decision import decide
from domain.policy.limits import DAY
from domain.recipient import Recipient
from domain.timezone import zone

# Statuses that no longer count against a cap, and that a duplicate is not folded into.
_NOT_COUNTED = frozenset({Status.SUPPRESSED, Status.CANCELLED, Status.EXPIRED})
_NOT_GOING_OUT = _NOT_COUNTED | {Status.FAILED}


@dataclass(frozen=True, slots=True)
class Admission:
    notification: Notification
    # True: ``notification`` is an earlier one with the same content; nothing new is stored.
    duplicate: bool = False


async def category_of(uow: UnitOfWork, tenant_id: str, name: str) -> Category:
    """The tenant's definition of the category; an undefined one is transactional, uncapped."""
    return await uow.categories.get(tenant_id, name) or Category.undefined(name)


class AdmittedBatch:
    """Notifications admitted earlier in a transaction and not yet stored (a bulk send, or a
    batch of sends), looked up by recipient: they count like stored ones."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []
        self._by_user: dict[str, list[Notification]] = {}

    def add(self, n: Notification) -> None:
        self.notifications.append(n)
        self._by_user.setdefault(n.user_id, []).append(n)

    def of(self, user_id: str) -> Sequence[Notification]:
        return self._by_user.get(user_id, ())


class PolicyGate:
    def __init__(self, default_dedup_window: timedelta = timedelta(0)) -> None:
        self._default_window = default_dedup_window

    def dedup_window(self, category: Category) -> timedelta:
        return category.dedup_window_or(self._default_window)

    def limits(self, category: Category, recipient: Recipient | None) -> Limits:
        if recipient is None:
            return category.limits
        return category.limits.stricter(recipient.preferences.limits_for(category.name))

    def needs_lock(self, category: Category, recipient: Recipient | None) -> bool:
        """Whether accepting for this recipient depends on a count (duplicates, caps)."""
        return self.dedup_window(category) > timedelta(0) or self.limits(category, recipient).active

    async def lock(
        self,
        uow: UnitOfWork,
        tenant_id: str,
        category: Category,
        recipients: Iterable[tuple[str, Recipient | None]],
    ) -> None:
        """Serialise accepts per recipient where a count decides (duplicates, caps)."""
        await self.lock_users(
            uow, tenant_id, {user for user, r in recipients if self.needs_lock(category, r)}
        )

    @staticmethod
    async def lock_users(uow: UnitOfWork, tenant_id: str, users: Iterable[str]) -> None:
        """Locks are taken in user_id order so that two batches cannot deadlock each other."""
        for user in sorted(set(users)):
            await uow.notifications.lock_recipient(tenant_id, user)

    async def admit(
        self,
        uow: UnitOfWork,
        prepared: Prepared,
        category: Category,
        recipient: Recipient | None,
        now: datetime,
        batch: AdmittedBatch | None = None,
    ) -> Admission:
        """Decide about ``prepared``. ``batch`` holds notifications admitted earlier in the same
        transaction and not yet stored (a bulk send), which count like stored ones."""
        new = prepared.new
        mine = batch.of(new.user_id) if batch is not None else ()
        window = self.dedup_window(category)
        if window > timedelta(0):
            earlier = next(
                (
                    n
                    for n in reversed(mine)
                    if n.channel is new.channel
                    and n.content_hash == prepared.content_hash
                    and n.status not in _NOT_GOING_OUT
                ),
                None,
            ) or await uow.notifications.find_duplicate(
                prepared.tenant_id, new.user_id, new.channel, prepared.content_hash, now - window
            )
            if earlier is not None:
                return Admission(earlier, duplicate=True)
        prepared, refused = await self._drop_refused_routes(uow, prepared, category, recipient)
        if refused:
            return Admission(prepared.accept(now, Decision(Verdict.SUPPRESS, refused)))
        new = prepared.new
        due = max(now, new.scheduled_at or now)
        limits = self.limits(category, recipient)
        counted: list[datetime] = []
        if limits.active:
            counted = await uow.notifications.counted_due_times(
                prepared.tenant_id, new.user_id, category.name, due - DAY
            )
            counted += [
                n.due_at
                for n in mine
                if n.category == category.name and n.status not in _NOT_COUNTED
            ]
        decision = decide(
            category=category,
            channel=new.channel,
            priority=new.priority,
            due=due,
            preferences=recipient.preferences if recipient else None,
            time_zone=zone(recipient.time_zone if recipient else ""),
            counted=counted,
        )
        return Admission(prepared.accept(now, decision))

    async def _drop_refused_routes(
        self,
        uow: UnitOfWork,
        prepared: Prepared,
        category: Category,
        recipient: Recipient | None,
    ) -> tuple[Prepared, str]:
        """Pass over the channels of the chain the recipient opted out of, or whose address
        is suppressed (a number that replied STOP). Returns the send with the first channel
        left in front, or, when none is left, the first channel's refusal (it is SUPPRESSED)."""
        new = prepared.new
        chain = new.chain
        kept: list[Route] = []
        refusals: list[tuple[Channel, str]] = []
        for route in chain:
            refusal = await self._refusal(uow, prepared.tenant_id, route, category, recipient)
            if refusal:
                refusals.append((route.channel, refusal))
            else:
                kept.append(route)
        if not refusals:
            return prepared, ""
        reasons = [f"{channel} skipped: {refusal}" for channel, refusal in refusals]
        if not kept:
            return prepared, refusals[0][1] if len(chain) == 1 else "; ".join(reasons)
        moved = kept[0].channel is not new.channel
        # A template version and locale describe the first channel's rendering only.
        new = new.routed(kept, None if moved else new.rendered, reasons)
        return replace(prepared, new=new, content_hash=new.content.digest()), ""

    @staticmethod
    async def _refusal(
        uow: UnitOfWork,
        tenant_id: str,
        route: Route,
        category: Category,
        recipient: Recipient | None,
    ) -> str:
        if recipient is not None:
            opted_out = recipient.preferences.opt_out_reason(
                category.name, route.channel, category.is_marketing
            )
            if opted_out:
                return opted_out
        address: Address | None = route.address
        if route.channel in (Channel.SMS, Channel.EMAIL) and address is not None:
            suppression = await uow.suppressions.find(tenant_id, address)
            if suppression is not None:
                return f"the {address.kind} is suppressed ({suppression.reason})"
        return ""
