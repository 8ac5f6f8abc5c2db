"""BulkSend: each recipient accepted or refused on its own, the whole call idempotent."""

from __future__ import annotations

from datetime import timedelta

import pytest

from application.errors import IdempotencyConflict
from application.ports.delivery_observer import AcceptanceOutcome
from application.principal import Principal
from application.use_cases.bulk_send import BulkSend, Refusal
from application.use_cases.commands import (
    AddressInput,
    BulkRecipientInput,
    BulkSendCommand,
    SendNotificationCommand,
    TemplateInput,
)
from application.use_cases.policy_gate import PolicyGate
from application.use_cases.send_notification import SendNotification
from domain.errors import PreconditionFailed, ValidationFailed
from domain.notification import Channel, Content, Priority, Status
from tests.unit.application.fakes import World

ALICE = Principal("tenant-a", "orders", "key-a")


def to(user: str, email: str | None) -> BulkRecipientInput:
    return BulkRecipientInput(user, AddressInput("email", email) if email is not None else None)


MIXED = [
    to("u0", "u0@example.com"),
    to("u1", "not-an-email"),
    to("u2", None),
    to("u3", "u3@example.com"),
]


def command(recipients: list[BulkRecipientInput] | None = None, **kw: object) -> BulkSendCommand:
    base: dict[str, object] = {
        "request_id": "bulk-1",
        "channel": Channel.EMAIL,
        "category": "newsletter",
        "recipients": MIXED if recipients is None else recipients,
        "content": Content("News", "This week"),
    }
    base.update(kw)
    return BulkSendCommand(**base)  # type: ignore[arg-type]


def use_case(world: World) -> BulkSend:
    return BulkSend(world.uow, world.scheduler, world.preparer, world.clock, world.ids)


async def test_mixed_recipients_are_accepted_or_refused_one_by_one(world: World) -> None:
    outcome = await use_case(world).execute(ALICE, command())

    assert [r.index for r in outcome.results] == [0, 1, 2, 3]
    assert [r.user_id for r in outcome.results] == ["u0", "u1", "u2", "u3"]
    refusals = {r.index: r.refusal for r in outcome.results if r.refusal is not None}
    assert set(refusals) == {1, 2}
    assert refusals[1] is not None
    assert (refusals[1].code, refusals[1].field) == (
        "INVALID_ARGUMENT",
        "recipients[1].address.email",
    )
    # No address given and none in the directory: the request is fine, the directory is not.
    assert refusals[2] is not None
    assert (refusals[2].code, refusals[2].field) == (
        "FAILED_PRECONDITION",
        "recipients[2].address",
    )

    accepted = [r.notification for r in outcome.results if r.notification is not None]
    assert [n.request_id for n in accepted] == ["bulk-1#0", "bulk-1#3"]
    assert all(n.bulk_job_id == outcome.job.id for n in accepted)
    assert all(n.status is Status.QUEUED for n in accepted)
    assert outcome.accepted == 2
    assert (outcome.job.recipient_count, outcome.job.accepted_count) == (4, 2)

    assert set(world.db.notifications) == {n.id for n in accepted}
    assert world.db.bulk_jobs[("tenant-a", outcome.job.id)].accepted_count == 2
    assert [i.notification_id for i in world.scheduler.enqueued] == [n.id for n in accepted]


@pytest.mark.parametrize("count", [0, 1001])
async def test_recipient_count_outside_1_to_1000_is_refused(world: World, count: int) -> None:
    recipients = [to(f"u{i}", f"u{i}@example.com") for i in range(count)]
    with pytest.raises(ValidationFailed) as info:
        await use_case(world).execute(ALICE, command(recipients))
    assert [v.field for v in info.value.violations] == ["recipients"]
    assert world.db.notifications == {}
    assert world.db.bulk_jobs == {}
    assert world.scheduler.calls == []


async def test_exactly_1000_recipients_are_accepted(world: World) -> None:
    recipients = [to(f"u{i}", f"u{i}@example.com") for i in range(1000)]
    outcome = await use_case(world).execute(ALICE, command(recipients))
    assert outcome.accepted == 1000
    assert len(world.db.notifications) == 1000


async def test_shared_fields_are_checked_before_any_recipient(world: World) -> None:
    with pytest.raises(ValidationFailed) as info:
        await use_case(world).execute(ALICE, command(request_id="", category=""))
    assert [v.field for v in info.value.violations] == ["request_id", "category"]
    with pytest.raises(ValidationFailed) as info:
        await use_case(world).execute(ALICE, command(request_id="r" * 123))
    assert [v.field for v in info.value.violations] == ["request_id"]
    with pytest.raises(ValidationFailed) as info:
        await use_case(world).execute(ALICE, command(template=TemplateInput("t")))
    assert [v.field for v in info.value.violations] == ["content"]
    with pytest.raises(PreconditionFailed):
        await use_case(world).execute(ALICE, command(channel=Channel.SMS))
    assert world.db.bulk_jobs == {}


async def test_replay_returns_the_same_job_and_notifications(world: World) -> None:
    bulk = use_case(world)
    first = await bulk.execute(ALICE, command())
    rows = {k: world.db.row(k) for k in world.db.notifications}

    again = await bulk.execute(ALICE, command())

    assert again.job.id == first.job.id
    assert [r.notification.id if r.notification else None for r in again.results] == [
        r.notification.id if r.notification else None for r in first.results
    ]
    assert [r.refusal for r in again.results] == [r.refusal for r in first.results]
    assert {k: world.db.row(k) for k in world.db.notifications} == rows
    assert list(world.db.bulk_jobs) == [("tenant-a", first.job.id)]
    assert world.db.bulk_jobs[("tenant-a", first.job.id)].accepted_count == 2
    # A replay only reads: a lock would make it a party to deadlocks with the worker.
    assert world.db.notification_locks == []


async def test_same_request_id_for_other_recipients_is_a_conflict(world: World) -> None:
    bulk = use_case(world)
    first = await bulk.execute(ALICE, command())
    with pytest.raises(IdempotencyConflict) as info:
        await bulk.execute(ALICE, command([to("someone-else", "x@example.com")]))
    assert info.value.existing_id == first.job.id
    assert len(world.db.notifications) == 2


async def test_derived_request_id_taken_by_another_send_is_refused_for_that_recipient(
    world: World,
) -> None:
    taken = SendNotificationCommand(
        request_id="bulk-1#3",
        user_id="other",
        channel=Channel.IN_APP,
        category="x",
        content=Content("t", "b"),
    )
    await SendNotification(world.uow, world.scheduler, world.preparer, world.clock).execute(
        ALICE, taken
    )
    outcome = await use_case(world).execute(ALICE, command())
    assert outcome.results[3].refusal == Refusal(
        "ALREADY_EXISTS",
        "recipients[3]",
        "request_id 'bulk-1#3' was used for another request",
    )
    assert outcome.accepted == 1


async def test_per_recipient_template_variables(world: World) -> None:
    world.renderer.templates[("tenant-a", "hello")] = ("Hi {name}", "{greeting}")
    recipients = [
        BulkRecipientInput("u0", AddressInput("email", "a@example.com"), {"name": "Ada"}),
        BulkRecipientInput("u1", AddressInput("email", "b@example.com")),
    ]
    outcome = await use_case(world).execute(
        ALICE,
        command(recipients, content=None, template=TemplateInput("hello", {"greeting": "Hey"})),
    )
    first, second = outcome.results
    assert first.notification is not None
    assert first.notification.content == Content("Hi Ada", "Hey")
    assert second.refusal is not None
    assert second.refusal.field == "recipients[1].template.variables.name"


# -- jobs named by the caller, and extended -------------------------------------------------

BOB = Principal("tenant-b", "orders", "key-b")


async def test_a_job_id_the_tenant_has_not_used_starts_a_job_with_that_id(world: World) -> None:
    outcome = await use_case(world).execute(ALICE, command(job_id="weekly-42"))
    assert outcome.job.id == "weekly-42"
    assert outcome.first_position == 0
    assert all(r.notification.bulk_job_id == "weekly-42" for r in outcome.results if r.notification)
    job = world.db.bulk_jobs[("tenant-a", "weekly-42")]
    assert (job.recipient_count, job.call_count, job.channel) == (4, 1, Channel.EMAIL)
    assert world.db.bulk_job_calls[("tenant-a", "bulk-1")].first_position == 0
    assert len(world.db.bulk_job_recipients) == 4


async def test_another_tenants_job_id_starts_a_job_of_our_own(world: World) -> None:
    theirs = await use_case(world).execute(BOB, command(job_id="shared-name"))
    ours = await use_case(world).execute(ALICE, command(job_id="shared-name"))
    assert ours.first_position == 0
    assert ours.job.tenant_id == "tenant-a"
    assert theirs.job.recipient_count == ours.job.recipient_count == 4
    assert {k for k in world.db.bulk_jobs} == {
        ("tenant-a", "shared-name"),
        ("tenant-b", "shared-name"),
    }


async def test_extending_with_another_channel_or_category_writes_nothing(world: World) -> None:
    await use_case(world).execute(ALICE, command(job_id="j"))
    before = (len(world.db.notifications), len(world.db.bulk_job_recipients), world.db.commits)
    with pytest.raises(PreconditionFailed) as info:
        await use_case(world).execute(
            ALICE, command(request_id="bulk-2", job_id="j", channel=Channel.IN_APP)
        )
    assert (info.value.subject, info.value.reason) == ("channel", "BULK_JOB_MISMATCH")
    with pytest.raises(PreconditionFailed) as info:
        await use_case(world).execute(ALICE, command(request_id="bulk-2", job_id="j", category="x"))
    assert (info.value.subject, info.value.reason) == ("category", "BULK_JOB_MISMATCH")
    after = (len(world.db.notifications), len(world.db.bulk_job_recipients), world.db.commits)
    assert after == before
    assert ("tenant-a", "bulk-2") not in world.db.bulk_job_calls


async def test_the_same_request_id_for_another_job_is_a_conflict(world: World) -> None:
    await use_case(world).execute(ALICE, command(job_id="a"))
    with pytest.raises(IdempotencyConflict):
        await use_case(world).execute(ALICE, command(job_id="b"))
    # A retry that leaves out the job id it first named is another request too.
    with pytest.raises(IdempotencyConflict):
        await use_case(world).execute(ALICE, command())
    assert list(world.db.bulk_jobs) == [("tenant-a", "a")]


async def test_a_malformed_job_id_is_refused_with_the_other_bad_fields(world: World) -> None:
    with pytest.raises(ValidationFailed) as info:
        await use_case(world).execute(ALICE, command(job_id="no/slashes", category=""))
    assert [v.field for v in info.value.violations] == ["job_id", "category"]
    assert world.db.bulk_jobs == {}


async def test_a_retry_of_an_extension_returns_its_first_answer_and_adds_nothing(
    world: World,
) -> None:
    bulk = use_case(world)
    await bulk.execute(ALICE, command(job_id="j"))
    second = await bulk.execute(ALICE, command(request_id="bulk-2", job_id="j"))
    assert second.first_position == 4
    enqueued = len(world.scheduler.enqueued)

    again = await bulk.execute(ALICE, command(request_id="bulk-2", job_id="j"))

    assert (again.replayed, again.first_position) == (True, 4)
    assert [
        (r.index, r.notification.id if r.notification else r.refusal) for r in again.results
    ] == [(r.index, r.notification.id if r.notification else r.refusal) for r in second.results]
    job = world.db.bulk_jobs[("tenant-a", "j")]
    assert (job.recipient_count, job.call_count, job.accepted_count) == (8, 2, 4)
    assert len(world.db.bulk_job_recipients) == 8
    assert len(world.db.notifications) == 4
    # Its queued notifications are enqueued again, in case the first enqueue was lost.
    assert len(world.scheduler.enqueued) == enqueued + 2


async def test_a_call_recorded_before_per_recipient_results_replays_from_derived_ids(
    world: World,
) -> None:
    bulk = use_case(world)
    first = await bulk.execute(ALICE, command())
    # As a job stored before bulk_job_recipients existed: the call, but no recipients.
    world.db.bulk_job_recipients.clear()

    again = await bulk.execute(ALICE, command())

    assert again.replayed
    assert [r.notification.id if r.notification else None for r in again.results] == [
        r.notification.id if r.notification else None for r in first.results
    ]
    assert [r.refusal for r in again.results] == [r.refusal for r in first.results]
    assert len(world.db.notifications) == 2


class RecordingAcceptances:
    def __init__(self) -> None:
        self.accepted: list[tuple[Channel, Priority, AcceptanceOutcome]] = []

    def notification_accepted(
        self, channel: Channel, priority: Priority, outcome: AcceptanceOutcome
    ) -> None:
        self.accepted.append((channel, priority, outcome))


async def test_each_newly_stored_notification_is_counted_once(world: World) -> None:
    observer = RecordingAcceptances()
    window = PolicyGate(timedelta(hours=1))
    bulk = BulkSend(
        world.uow, world.scheduler, world.preparer, world.clock, world.ids, window, observer
    )
    outcome = await bulk.execute(ALICE, command())
    stored = [r.notification for r in outcome.results if r.notification is not None]
    assert observer.accepted == [
        (Channel.EMAIL, n.priority, AcceptanceOutcome.QUEUED) for n in stored
    ]
    assert len(observer.accepted) == 2

    # A retry stores nothing; the same content again within the window is folded into the
    # notifications already stored: neither is a new acceptance.
    await bulk.execute(ALICE, command())
    again = await bulk.execute(ALICE, command(request_id="bulk-2"))
    assert [r.deduplicated for r in again.results if r.notification is not None] == [True, True]
    assert len(observer.accepted) == 2
