"""The Notification aggregate: one message to one recipient on one channel, and its whole life."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from domain.errors import IllegalTransition, PreconditionFailed, ValidationFailed, Violations
from domain.notification.address import ADDRESS_KIND_BY_CHANNEL, Address
from domain.notification.attempt import AttemptOutcome, DeliveryAttempt, DeliveryResult, ErrorClass
from domain.notification.decision import Decision, Verdict
from domain.notification.engagement import REPORT_CLOCK_SKEW, EngagementAction
from domain.notification.retry_policy import RetryPolicy
from domain.notification.route import Route
from domain.notification.status import (
    CANCELLABLE,
    PROVIDER_ACCEPTED,
    SETTLED,
    UNSENT,
    Status,
    can_transition,
)
from domain.notification.values import (
    MAX_BODY_CHARS,
    MAX_CATEGORY_CHARS,
    MAX_METADATA_ENTRIES,
    MAX_METADATA_VALUE_CHARS,
    MAX_TITLE_CHARS,
    MAX_USER_ID_CHARS,
    Channel,
    Content,
    Priority,
    Rendered,
)

MAX_REQUEST_ID_CHARS = 128
REPLAY_REASON = "replayed from the dead-letter queue"
CANCELLED_REASON = "cancelled by caller"
ERASED_REASON = "recipient deleted: personal data erased"

# The status an engagement moves a notification on to, if it is not there or beyond already.
_ENGAGEMENT_STATUS: dict[EngagementAction, Status | None] = {
    EngagementAction.DELIVERED: Status.DELIVERED,
    EngagementAction.OPENED: Status.READ,
    EngagementAction.CLICKED: Status.READ,
    EngagementAction.DISMISSED: None,
}


@dataclass(frozen=True, slots=True)
class StatusChange:
    status: Status
    at: datetime
    reason: str = ""


@dataclass(frozen=True, slots=True)
class NewNotification:
    """Everything a caller states about a notification, checked before one exists."""

    request_id: str
    user_id: str
    channel: Channel
    priority: Priority
    category: str
    content: Content
    address: Address | None = None
    scheduled_at: datetime | None = None
    expires_at: datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    rendered: Rendered | None = None
    # Where to go next, in order, if this channel fails permanently.
    fallbacks: tuple[Route, ...] = ()
    # Channels of the requested chain passed over before sending (no address): why, each.
    skipped: tuple[str, ...] = ()

    @property
    def chain(self) -> tuple[Route, ...]:
        """Every route in order: the notification's own channel first, then the fallbacks."""
        return (Route(self.channel, self.address, self.content), *self.fallbacks)

    def routed(
        self, routes: Sequence[Route], rendered: Rendered | None, skipped: Sequence[str]
    ) -> NewNotification:
        """The same send going by ``routes[0]`` (rendered as ``rendered``), then the rest;
        ``skipped`` adds to the reasons already given for channels passed over."""
        first = routes[0]
        return replace(
            self,
            channel=first.channel,
            address=first.address,
            content=first.content,
            rendered=rendered,
            fallbacks=tuple(routes[1:]),
            skipped=(*self.skipped, *skipped),
        )


def validate_new(new: NewNotification, now: datetime, field_prefix: str = "") -> Violations:
    """Every rule a new notification must meet, reported all at once."""
    v = Violations()
    p = field_prefix
    if not new.request_id:
        v.add(f"{p}request_id", "required: a unique key that makes retries safe")
    elif len(new.request_id) > MAX_REQUEST_ID_CHARS:
        v.add(f"{p}request_id", f"longer than {MAX_REQUEST_ID_CHARS} characters")
    if not new.user_id.strip():
        v.add(f"{p}user_id", "required")
    elif len(new.user_id) > MAX_USER_ID_CHARS:
        v.add(f"{p}user_id", f"longer than {MAX_USER_ID_CHARS} characters")
    if not new.category.strip():
        v.add(f"{p}category", "required (the notification type, e.g. order_shipped)")
    elif len(new.category) > MAX_CATEGORY_CHARS:
        v.add(f"{p}category", f"longer than {MAX_CATEGORY_CHARS} characters")
    c = new.content
    if not c.title.strip() and not c.body.strip() and not c.html.strip() and not c.data:
        v.add(f"{p}content", "title, body, html and data are all empty")
    if len(new.content.title) > MAX_TITLE_CHARS:
        v.add(f"{p}content.title", f"longer than {MAX_TITLE_CHARS} characters")
    if len(new.content.body) > MAX_BODY_CHARS:
        v.add(f"{p}content.body", f"longer than {MAX_BODY_CHARS} characters")
    needed = ADDRESS_KIND_BY_CHANNEL.get(new.channel)
    if new.address is not None and not new.address.fits(new.channel):
        v.add(
            f"{p}address", f"a {new.address.kind} address cannot carry a {new.channel} notification"
        )
    elif new.address is None and needed is not None:
        v.add(f"{p}address.{needed}", f"required for channel {new.channel}")
    if new.expires_at is not None:
        if new.expires_at <= now:
            v.add(f"{p}expires_at", "is in the past")
        elif new.scheduled_at is not None and new.expires_at <= new.scheduled_at:
            v.add(f"{p}expires_at", "is not after scheduled_at")
    seen = {new.channel}
    for i, route in enumerate(new.fallbacks):
        if route.channel in seen:
            v.add(f"{p}fallback_channels[{i}]", f"{route.channel} is already in the chain")
        seen.add(route.channel)
        if route.address is not None and not route.address.fits(route.channel):
            v.add(f"{p}fallback_channels[{i}]", f"no {route.channel} address")
    if len(new.metadata) > MAX_METADATA_ENTRIES:
        v.add(f"{p}metadata", f"more than {MAX_METADATA_ENTRIES} entries")
    for key, value in new.metadata.items():
        if not key or len(key) > 128 or len(value) > MAX_METADATA_VALUE_CHARS:
            v.add(f"{p}metadata[{key}]", "keys are 1-128 characters, values at most 1024")
            break
    return v


@dataclass
class Notification:
    id: str
    tenant_id: str
    caller: str
    request_id: str
    request_fingerprint: str
    user_id: str
    channel: Channel
    priority: Priority
    category: str
    content: Content
    address: Address | None
    status: Status
    created_at: datetime
    updated_at: datetime
    due_at: datetime
    scheduled_at: datetime | None = None
    expires_at: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    template_name: str = ""
    template_version: int = 0
    locale: str = ""
    status_reason: str = ""
    bulk_job_id: str | None = None
    # SHA-256 of the content as rendered: outlives the content when it is erased.
    content_hash: str = ""
    erased_at: datetime | None = None
    # The rest of the fallback chain: the next route is taken when this channel fails for good.
    fallbacks: list[Route] = field(default_factory=list)
    history: list[StatusChange] = field(default_factory=list)
    attempts: list[DeliveryAttempt] = field(default_factory=list)
    # The first time of each thing the recipient did with it (as they reported it).
    engagements: dict[EngagementAction, datetime] = field(default_factory=dict)
    # When a cancel reached it while it was being sent or dead-lettered (those cannot be
    # cancelled outright): from then on it is never tried again.
    cancel_requested_at: datetime | None = None
    # Optimistic-concurrency version, owned by the repository: a stale writer's save fails.
    version: int = 0

    # -- creation -----------------------------------------------------------------------------

    @classmethod
    def accept(
        cls,
        new: NewNotification,
        *,
        id: str,
        tenant_id: str,
        caller: str,
        fingerprint: str,
        now: datetime,
        bulk_job_id: str | None = None,
        decision: Decision | None = None,
    ) -> Notification:
        """A new notification, validated, then queued (held until its scheduled time, or as long
        as the policy ``decision`` says) or suppressed with the decision's reason."""
        validate_new(new, now).raise_if_any()
        due = new.scheduled_at if new.scheduled_at and new.scheduled_at > now else now
        decision = decision or Decision.send()
        if decision.verdict is Verdict.HOLD:
            assert decision.until is not None, "a hold says until when"
            due = max(due, decision.until)
        n = cls(
            id=id,
            tenant_id=tenant_id,
            caller=caller,
            request_id=new.request_id,
            request_fingerprint=fingerprint,
            user_id=new.user_id,
            channel=new.channel,
            priority=new.priority,
            category=new.category,
            content=new.content,
            address=new.address,
            status=Status.PENDING,
            created_at=now,
            updated_at=now,
            due_at=due,
            scheduled_at=new.scheduled_at,
            expires_at=new.expires_at,
            metadata=dict(new.metadata),
            template_name=new.rendered.template_name if new.rendered else "",
            template_version=new.rendered.template_version if new.rendered else 0,
            locale=new.rendered.locale if new.rendered else "",
            bulk_job_id=bulk_job_id,
            content_hash=new.content.digest(),
            fallbacks=list(new.fallbacks),
            history=[StatusChange(Status.PENDING, now)],
        )
        skipped = "; ".join(new.skipped)
        if decision.verdict is Verdict.SUPPRESS:
            n._move(Status.SUPPRESSED, now, decision.reason)
        else:
            reason = decision.reason or ("scheduled" if due > now else "")
            n._move(Status.QUEUED, now, "; ".join(r for r in (skipped, reason) if r))
        return n

    # -- queries ------------------------------------------------------------------------------

    @property
    def attempt_count(self) -> int:
        return len(self.attempts)

    @property
    def attempts_this_round(self) -> int:
        """The retry budget used: attempts on the current channel since the last replay, not
        counting those that failed over to the next provider at once."""
        replayed_at = next(
            (c.at for c in reversed(self.history) if c.reason == REPLAY_REASON), None
        )
        return sum(
            1
            for a in self.attempts
            if (replayed_at is None or a.started_at >= replayed_at)
            and a.channel in ("", self.channel.value)
            and a.outcome is not AttemptOutcome.FAILED_OVER
        )

    @property
    def pinned_provider(self) -> str | None:
        """The provider that may already hold this notification on the current channel (an
        earlier attempt went out unanswered): only it may be tried again, or the recipient
        could get it twice."""
        for a in reversed(self.attempts):
            if a.channel in ("", self.channel.value) and a.error_class is ErrorClass.MAYBE_ACCEPTED:
                return a.provider
        return None

    @property
    def accepted_attempt(self) -> DeliveryAttempt | None:
        """The attempt a provider accepted, once one did (its provider and end time say who
        took it and when)."""
        if self.status not in PROVIDER_ACCEPTED:
            return None
        for a in reversed(self.attempts):
            if a.outcome is AttemptOutcome.ACCEPTED:
                return a
        return None

    @property
    def last_provider(self) -> str:
        """The provider of the latest attempt on the current channel that named one: the one
        that accepted it, else the one that failed it last ("" when none was tried)."""
        for a in reversed(self.attempts):
            if a.provider and a.channel in ("", self.channel.value):
                return a.provider
        return ""

    @property
    def is_settled(self) -> bool:
        return self.status in SETTLED

    @property
    def unread(self) -> bool:
        return self.channel is Channel.IN_APP and self.status is Status.DELIVERED

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def changed_at(self, status: Status) -> datetime | None:
        for change in reversed(self.history):
            if change.status is status:
                return change.at
        return None

    # -- delivery -----------------------------------------------------------------------------

    def begin_attempt(
        self, now: datetime, max_attempts: int | None = None
    ) -> DeliveryAttempt | None:
        """Start a try at sending. Returns None when it expired, or when ``max_attempts`` were
        already used up by workers that died mid-attempt (it is then FAILED: dead-lettered)."""
        if self.status not in (Status.QUEUED, Status.SENDING):
            raise IllegalTransition(f"notification {self.id}", self.status, Status.SENDING)
        if self.cancel_requested_at is not None:
            # Queued again by a worker that had loaded it before the request, or rescued
            # from one that vanished mid-attempt: either way, no further try.
            self._abandon_open_attempt(now)
            self._move(Status.CANCELLED, now, f"{CANCELLED_REASON} while it was being sent")
            return None
        if self.is_expired(now):
            self._abandon_open_attempt(now)
            self._move(Status.EXPIRED, now, "expires_at passed before it could be sent")
            return None
        reason = ""
        if self.status is Status.SENDING:
            # The previous holder vanished mid-attempt; its outcome is unknown.
            self._abandon_open_attempt(now)
            reason = "previous attempt abandoned"
            if max_attempts is not None and self.attempts_this_round >= max_attempts:
                # A notification that keeps killing workers must not be retried for ever.
                self._move(
                    Status.FAILED,
                    now,
                    f"gave up after {len(self.attempts)} attempts; the last was abandoned",
                )
                return None
        attempt = self._open_attempt(now)
        self._move(Status.SENDING, now, reason)
        return attempt

    def record_failover(self, now: datetime, *, provider: str, message: str) -> None:
        """The provider of the open attempt failed before it could have accepted, and the
        channel's next provider is being tried at once: close this attempt as FAILED_OVER and
        open the next (still SENDING)."""
        self._finish_open_attempt(
            now,
            AttemptOutcome.FAILED_OVER,
            provider=provider,
            error_class=ErrorClass.PROVIDER_DOWN,
            error_message=message,
        )
        self._open_attempt(now)

    def record_success(self, now: datetime, result: DeliveryResult) -> None:
        self._finish_open_attempt(
            now,
            AttemptOutcome.ACCEPTED,
            provider=result.provider,
            provider_message_id=result.provider_message_id,
        )
        self._move(Status.SENT, now, f"accepted by {result.provider}")
        if result.delivered:
            self._move(Status.DELIVERED, now)

    def record_failure(
        self,
        now: datetime,
        *,
        provider: str,
        error_class: ErrorClass,
        message: str,
        policy: RetryPolicy,
        random: Callable[[], float],
        retry_after: timedelta | None = None,
    ) -> None:
        """Close the open attempt as failed; retry later if the failure and attempts allow."""
        permanent = error_class is ErrorClass.PERMANENT
        self._finish_open_attempt(
            now,
            AttemptOutcome.PERMANENT_FAILURE if permanent else AttemptOutcome.TRANSIENT_FAILURE,
            provider=provider,
            error_class=error_class,
            error_message=message,
        )
        if self.cancel_requested_at is not None and (
            not permanent or (self.fallbacks and self.pinned_provider is None)
        ):
            # Cancelled while this attempt was out: it failed, so nothing went out, and
            # neither a retry nor the next channel of the chain may send it now.
            self._move(
                Status.CANCELLED,
                now,
                f"{CANCELLED_REASON} while it was being sent; not retried after: {message}",
            )
            return
        if permanent:
            # After an unanswered request the first channel may already have delivered it:
            # going on to the next channel could reach the recipient twice.
            if self.fallbacks and self.pinned_provider is None:
                self._fall_back(now, f"{self.channel} failed permanently: {message}")
                return
            self._move(Status.FAILED, now, f"permanent failure: {message}")
            return
        made = self.attempts_this_round
        if not policy.allows_another(made):
            self._move(Status.FAILED, now, f"gave up after {made} attempts: {message}")
            return
        retry_at = policy.next_attempt_at(now, made, random, retry_after)
        if self.expires_at is not None and retry_at >= self.expires_at:
            self._move(Status.EXPIRED, now, "expires before the next attempt is due")
            return
        self.due_at = retry_at
        self._move(Status.QUEUED, now, f"retry after transient failure: {message}")

    # -- caller and recipient actions ---------------------------------------------------------

    def cancel(self, now: datetime) -> None:
        if self.status is Status.CANCELLED:
            return
        if self.status not in CANCELLABLE:
            raise IllegalTransition(f"notification {self.id}", self.status, Status.CANCELLED)
        self._move(Status.CANCELLED, now, CANCELLED_REASON)

    def request_cancel(self, now: datetime) -> bool:
        """Cancel it if no provider has it yet (returns True); if it is being sent or is a
        dead letter, keep the request: a failed attempt then ends CANCELLED instead of being
        retried, and a replay is refused (a success still ends SENT: it went out). Repeats
        keep the first request. One already sent or settled otherwise: IllegalTransition."""
        if self.status is Status.CANCELLED:
            return False
        if self.status not in UNSENT:
            raise IllegalTransition(f"notification {self.id}", self.status, Status.CANCELLED)
        if self.status in CANCELLABLE:
            self.cancel(now)
            return True
        if self.cancel_requested_at is None:
            # Not a status change, and updated_at stays: it orders the dead-letter listing.
            self.cancel_requested_at = now
        return False

    def expire(self, now: datetime) -> None:
        if not self.is_expired(now):
            raise PreconditionFailed(f"notification {self.id}", "has not reached expires_at")
        self._abandon_open_attempt(now)
        self._move(Status.EXPIRED, now, "expires_at passed before it could be sent")

    def replay(self, now: datetime) -> None:
        """Queue a dead letter again, now, with a fresh retry budget; id and history stay."""
        if self.status is not Status.FAILED:
            raise IllegalTransition(f"notification {self.id}", self.status, "replayed")
        if self.cancel_requested_at is not None:
            raise PreconditionFailed(
                f"notification {self.id}",
                "its cancel was requested (its bulk job was cancelled); it is not sent again",
                reason="CANCEL_REQUESTED",
            )
        if self.is_expired(now):
            raise PreconditionFailed(
                f"notification {self.id}", "its expires_at has passed; it can no longer be sent"
            )
        self.due_at = now
        self._move(Status.QUEUED, now, REPLAY_REASON)

    def suppress(self, now: datetime, reason: str) -> None:
        self._move(Status.SUPPRESSED, now, reason)

    def erase(self, now: datetime) -> bool:
        """The recipient was deleted: drop their personal data (address, content, metadata),
        keeping what proves what happened (statuses, attempts, template version, content hash).
        One not yet sent is cancelled first. Returns whether it was cancelled. One being sent
        right now cannot be erased (its worker holds it): IllegalTransition."""
        if self.status is Status.SENDING:
            raise IllegalTransition(f"notification {self.id}", self.status, "erased")
        cancelled = False
        if self.status in CANCELLABLE:
            self._move(Status.CANCELLED, now, ERASED_REASON)
            cancelled = True
        if self.address is not None:
            self.address = Address(self.address.kind, "")
        self.content = Content("", "")
        self.metadata = {}
        self.fallbacks = []
        self.erased_at = now
        self.updated_at = now
        return cancelled

    def mark_delivered(self, now: datetime) -> None:
        if self.status in (Status.DELIVERED, Status.READ):
            return
        self._move(Status.DELIVERED, now)

    def mark_read(self, now: datetime) -> bool:
        """Mark an in-app notification read. Returns False when it already was (idempotent)."""
        if self.channel is not Channel.IN_APP:
            raise PreconditionFailed(
                f"notification {self.id}",
                f"is a {self.channel} notification; only IN_APP notifications can be marked read",
                reason="NOT_IN_APP",
            )
        if self.status is Status.READ:
            return False
        self._move(Status.READ, now)
        return True

    def engage(self, action: EngagementAction, at: datetime, now: datetime) -> bool:
        """Record that the recipient did ``action`` at ``at`` (their clock); a delivery receipt
        makes a SENT notification DELIVERED, an open or click makes it READ. Each action counts
        once: a repeat returns False and keeps the first time. Only for a notification a
        provider accepted (PreconditionFailed NOT_SENT otherwise), at a time not before it was
        created (ValidationFailed on event_time; up to REPORT_CLOCK_SKEW early is tolerated)."""
        if self.status not in PROVIDER_ACCEPTED:
            raise PreconditionFailed(
                f"notification {self.id}",
                f"is {self.status}; only a notification a provider accepted (SENT, DELIVERED or"
                " READ) can be engaged with",
                reason="NOT_SENT",
            )
        if at < self.created_at - REPORT_CLOCK_SKEW:
            raise ValidationFailed.single(
                "event_time",
                f"is before the notification was created ({self.created_at.isoformat()})",
            )
        if action in self.engagements:
            return False
        self.engagements[action] = at
        self.updated_at = now
        target = _ENGAGEMENT_STATUS[action]
        # Receipts arrive out of order (an open before the delivery receipt): never step back.
        if target is not None and can_transition(self.status, target):
            self._move(target, now, f"engagement reported: {action}")
        return True

    # -- internals ----------------------------------------------------------------------------

    def _move(self, target: Status, now: datetime, reason: str = "") -> None:
        if not can_transition(self.status, target):
            raise IllegalTransition(f"notification {self.id}", self.status, target)
        self.status = target
        self.status_reason = reason
        self.updated_at = now
        self.history.append(StatusChange(target, now, reason))

    def _open_attempt(self, at: datetime) -> DeliveryAttempt:
        attempt = DeliveryAttempt(
            number=len(self.attempts) + 1, started_at=at, channel=self.channel.value
        )
        self.attempts.append(attempt)
        return attempt

    def _fall_back(self, now: datetime, why: str) -> None:
        """Take the next route of the chain: its channel, address and content, queued now with
        a fresh retry budget (the budget counts attempts on the current channel only)."""
        route = self.fallbacks.pop(0)
        self.channel = route.channel
        self.address = route.address
        self.content = route.content
        self.content_hash = route.content.digest()
        self.due_at = now
        self._move(Status.QUEUED, now, f"{why}; falling back to {route.channel}")

    def _open_attempt_index(self) -> int | None:
        if self.attempts and self.attempts[-1].outcome is AttemptOutcome.IN_PROGRESS:
            return len(self.attempts) - 1
        return None

    def _finish_open_attempt(self, now: datetime, outcome: AttemptOutcome, **kw: object) -> None:
        index = self._open_attempt_index()
        if self.status is not Status.SENDING or index is None:
            raise IllegalTransition(f"notification {self.id}", self.status, "an attempt outcome")
        self.attempts[index] = self.attempts[index].finish(now, outcome, **kw)  # type: ignore[arg-type]

    def _abandon_open_attempt(self, now: datetime) -> None:
        index = self._open_attempt_index()
        if index is not None:
            self.attempts[index] = self.attempts[index].finish(
                now,
                AttemptOutcome.ABANDONED,
                error_class=ErrorClass.LEASE_LOST,
                error_message="the worker holding this attempt stopped before recording an outcome",
            )
