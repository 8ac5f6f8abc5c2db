"""StreamInbox: follow a user's in-app inbox from a cursor, with no gap and no repeat.

The inbox log gives every change a per-user seq, and seqs become visible in order (see
InboxEventRepository). A stream remembers the last seq it sent and only ever asks for
"seq > last": whatever commits later is found by the next read, so nothing is skipped or sent
twice. Between reads it waits for a wake-up (published after each commit) or, if one is lost,
for its poll interval.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from application.ports.inbox_notifier import InboxNotifier, InboxWakeups
from application.ports.repositories import InboxEvent, InboxEventKind, UnitOfWorkFactory
from application.principal import Principal
from domain.errors import ValidationFailed
from domain.notification import Notification

_VERSION = "v1"


@dataclass(frozen=True, slots=True)
class InboxUpdate:
    """One message of the stream. ``cursor`` resumes right after it."""

    cursor: str
    kind: InboxEventKind
    unread_count: int
    notification: Notification | None = None
    read_ids: tuple[str, ...] = ()


class InboxCursors:
    """Opaque cursors: base64url of "v1:<seq>:<inbox tag>". The tag (a short hash of tenant
    and user) refuses a cursor taken from another user's stream, whose seq would mean
    nothing here."""

    @staticmethod
    def _tag(tenant_id: str, user_id: str) -> str:
        return hashlib.sha256(f"{tenant_id}\x00{user_id}".encode()).hexdigest()[:12]

    def encode(self, tenant_id: str, user_id: str, seq: int) -> str:
        text = f"{_VERSION}:{seq}:{self._tag(tenant_id, user_id)}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    def decode(self, tenant_id: str, user_id: str, cursor: str) -> int:
        """The seq of a cursor; ValidationFailed on ``cursor`` if it is not one of ours."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            version, seq, tag = raw.decode("ascii").split(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise ValidationFailed.single(
                "cursor", "not a cursor of this service; pass one from an earlier stream"
            ) from None
        if version != _VERSION or not seq.isdigit() or len(seq) > 18:
            raise ValidationFailed.single(
                "cursor", "not a cursor of this service; pass one from an earlier stream"
            )
        if tag != self._tag(tenant_id, user_id):
            raise ValidationFailed.single("cursor", "belongs to another user's stream")
        return int(seq)


@dataclass(frozen=True, slots=True)
class _Page:
    events: list[InboxEvent]
    notifications: dict[str, Notification]


class StreamInbox:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        notifier: InboxNotifier,
        *,
        poll_interval: float = 10.0,
        page_size: int = 100,
        cursors: InboxCursors | None = None,
    ) -> None:
        if poll_interval <= 0 or page_size < 1:
            raise ValueError("poll_interval must be positive and page_size at least 1")
        self._uow = uow
        self._notifier = notifier
        self._poll_interval = poll_interval
        self._page_size = page_size
        self._cursors = cursors or InboxCursors()

    async def execute(
        self, principal: Principal, user_id: str, cursor: str, stop: asyncio.Event
    ) -> AsyncIterator[InboxUpdate]:
        """Updates until ``stop`` is set (or the caller stops iterating). An empty cursor starts
        with an UNREAD_COUNT; so does a cursor whose events were pruned meanwhile."""
        tenant_id = principal.tenant_id
        if not user_id.strip():
            raise ValidationFailed.single("user_id", "required")
        position = self._cursors.decode(tenant_id, user_id, cursor) if cursor else None
        # Subscribed before the first read: a change committed after that read wakes us.
        async with self._notifier.subscribe(tenant_id, user_id) as wakeups:
            if position is None:
                position, update = await self._snapshot(tenant_id, user_id)
                yield update
            else:
                await self._refuse_forged(tenant_id, user_id, position)
            while not stop.is_set():
                page = await self._page(tenant_id, user_id, position)
                if not _follows(page.events, position):
                    # Events we have not sent were pruned: start again from the current count.
                    position, update = await self._snapshot(tenant_id, user_id)
                    yield update
                    continue
                for event in page.events:
                    position = event.seq
                    found = page.notifications.get(event.notification_id)
                    yield self._update(tenant_id, user_id, event, found)
                if len(page.events) < self._page_size:
                    await self._pause(wakeups, stop)

    async def _refuse_forged(self, tenant_id: str, user_id: str, position: int) -> None:
        async with self._uow() as uow:
            last, _ = await uow.inbox.head(tenant_id, user_id)
        if position > last:
            raise ValidationFailed.single(
                "cursor", "is ahead of this inbox; pass one from an earlier stream"
            )

    async def _snapshot(self, tenant_id: str, user_id: str) -> tuple[int, InboxUpdate]:
        """An UNREAD_COUNT positioned at the head. The head is read before the count: a change
        committed between the two is then counted here AND sent as an event, and since events
        carry the count itself (not a difference), the client still ends up right."""
        async with self._uow() as uow:
            last, _ = await uow.inbox.head(tenant_id, user_id)
            count = await uow.notifications.count_unread(tenant_id, user_id)
        cursor = self._cursors.encode(tenant_id, user_id, last)
        return last, InboxUpdate(cursor, InboxEventKind.UNREAD_COUNT, count)

    async def _page(self, tenant_id: str, user_id: str, position: int) -> _Page:
        # The unit of work ends before anything is sent: a slow client holds no connection.
        async with self._uow() as uow:
            events = await uow.inbox.after(tenant_id, user_id, position, self._page_size)
            wanted = [
                e.notification_id
                for e in events
                if e.kind is InboxEventKind.NOTIFICATION_DELIVERED and e.notification_id
            ]
            found = await uow.notifications.get_many(tenant_id, wanted) if wanted else []
        return _Page(events, {n.id: n for n in found})

    async def _pause(self, wakeups: InboxWakeups, stop: asyncio.Event) -> None:
        woken = asyncio.ensure_future(wakeups.wait(self._poll_interval))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((woken, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            stopped.cancel()
            await asyncio.gather(woken, stopped, return_exceptions=True)

    def _update(
        self, tenant_id: str, user_id: str, event: InboxEvent, notification: Notification | None
    ) -> InboxUpdate:
        return InboxUpdate(
            cursor=self._cursors.encode(tenant_id, user_id, event.seq),
            kind=event.kind,
            unread_count=event.unread_count,
            notification=notification,
            read_ids=event.read_ids,
        )


def _follows(events: Sequence[InboxEvent], position: int) -> bool:
    """True when ``events`` continue ``position`` with no seq missing."""
    expected = position + 1
    for event in events:
        if event.seq != expected:
            return False
        expected += 1
    return True
