"""GetBulkJob, ListBulkJobRecipients and CancelBulkJob over jobs made by BulkSend (fakes)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from application.errors import ConcurrentUpdate
from application.ports.sender import Delivered
from application.principal import Principal
from application.use_cases import bulk_jobs
from application.use_cases.bulk_jobs import (
    CancelBulkJob,
    GetBulkJob,
    ListBulkJobRecipients,
)
from application.use_cases.bulk_send import BulkOutcome, BulkSend
from application.use_cases.commands import AddressInput, BulkRecipientInput, BulkSendCommand
from application.use_cases.dead_letters import ReplayDeadLetters
from application.use_cases.deliver_notification import DeliverNotification
from domain.bulk_job import BulkJobState
from domain.errors import NotFound, PreconditionFailed, ValidationFailed
from domain.notification import (
    Address,
    Channel,
    Content,
    DeliveryResult,
    ErrorClass,
    Notification,
    RetryPolicy,
    Status,
)
from domain.recipient import ChannelPreference, Preferences, Profile, Recipient
from tests.unit.application.fakes import T0, FakeNotificationRepository, World, failure

ALICE = Principal("tenant-a", "marketing", "key-a")
MALLORY = Principal("tenant-b", "marketing", "key-b")


def opted_out(world: World, user_id: str) -> None:
    """A recipient in the directory who turned email off."""
    r = Recipient.register(
        "tenant-a",
        user_id,
        Profile(email=Address("email", f"{user_id}@example.com")),
        Preferences(channels=(ChannelPreference("*", Channel.EMAIL, False),)),
        T0,
    )
    r.version = 1
    world.db.recipients[("tenant-a", user_id)] = r


def mixed(world: World, count: int = 1000) -> list[BulkRecipientInput]:
    """Every tenth recipient has a bad address, every tenth (other) one opted out of email."""
    recipients = []
    for i in range(count):
        user = f"u{i:04d}"
        if i % 10 == 0:
            recipients.append(BulkRecipientInput(user, AddressInput("email", "not-an-email")))
            continue
        if i % 10 == 1:
            opted_out(world, user)
        recipients.append(BulkRecipientInput(user, AddressInput("email", f"{user}@example.com")))
    return recipients


def command(
    recipients: list[BulkRecipientInput], request_id: str = "call-1", **kw: object
) -> BulkSendCommand:
    base: dict[str, object] = {
        "request_id": request_id,
        "channel": Channel.EMAIL,
        "category": "spring_sale",
        "recipients": recipients,
        "content": Content("Sale", "Everything must go"),
    }
    base.update(kw)
    return BulkSendCommand(**base)  # type: ignore[arg-type]


async def send(world: World, cmd: BulkSendCommand, who: Principal = ALICE) -> BulkOutcome:
    return await BulkSend(
        world.uow, world.scheduler, world.preparer, world.clock, world.ids
    ).execute(who, cmd)


def getter(world: World) -> GetBulkJob:
    return GetBulkJob(world.uow)


def lister(world: World) -> ListBulkJobRecipients:
    return ListBulkJobRecipients(world.uow)


def canceller(world: World) -> CancelBulkJob:
    return CancelBulkJob(world.uow, world.scheduler, world.clock)


def progress_to(world: World, notification_id: str, step: Callable[[Notification], None]) -> None:
    """A worker's doing, committed: ``step`` moves the notification on."""
    n = world.db.notifications[notification_id]
    step(n)
    n.version += 1


def sending(n: Notification) -> None:
    n.begin_attempt(T0)


def sent(n: Notification) -> None:
    n.begin_attempt(T0)
    n.record_success(T0, DeliveryResult("smtp"))


def delivered(n: Notification) -> None:
    sent(n)
    n.mark_delivered(T0)


def failed(n: Notification) -> None:
    n.begin_attempt(T0)
    n.record_failure(
        T0,
        provider="smtp",
        error_class=ErrorClass.PERMANENT,
        message="mailbox unknown",
        policy=RetryPolicy(),
        random=lambda: 0.5,
    )


def accepted_ids(outcome: BulkOutcome) -> list[str]:
    return [r.notification.id for r in outcome.results if r.notification is not None]


# -- GetBulkJob -------------------------------------------------------------------------------


async def test_a_bulk_of_1000_mixed_recipients_is_counted_as_it_progresses(world: World) -> None:
    outcome = await send(world, command(mixed(world)))
    job_id = outcome.job.id

    report = await getter(world).execute(ALICE, job_id)
    p = report.progress
    assert (p.refused, p.accepted, p.suppressed, p.queued) == (100, 900, 100, 800)
    assert (p.sent, p.delivered, p.failed, p.cancelled) == (0, 0, 0, 0)
    assert report.state is BulkJobState.RUNNING
    assert (report.job.recipient_count, report.job.accepted_count) == (1000, 900)
    assert report.job.channel is Channel.EMAIL
    assert report.job.category == "spring_sale"

    queued = [
        r.notification.id
        for r in outcome.results
        if r.notification is not None and r.notification.status is Status.QUEUED
    ]
    assert len(queued) == 800
    for i, nid in enumerate(queued):
        progress_to(world, nid, (sent, delivered, failed, sending)[i % 4])
    p = (await getter(world).execute(ALICE, job_id)).progress
    assert (p.sent, p.delivered, p.failed, p.queued) == (200, 200, 200, 200)
    assert p.accepted == 900

    for nid in queued[3::4]:
        progress_to(world, nid, lambda n: n.record_success(T0, DeliveryResult("smtp")))
    report = await getter(world).execute(ALICE, job_id)
    assert (report.progress.sent, report.progress.queued) == (400, 0)
    assert report.state is BulkJobState.COMPLETED


async def test_a_job_is_invisible_to_other_tenants(world: World) -> None:
    outcome = await send(world, command(mixed(world, 3)))
    with pytest.raises(NotFound):
        await getter(world).execute(MALLORY, outcome.job.id)
    with pytest.raises(NotFound):
        await lister(world).execute(MALLORY, outcome.job.id, 0, "")
    with pytest.raises(NotFound):
        await canceller(world).execute(MALLORY, outcome.job.id)
    assert (await getter(world).execute(ALICE, outcome.job.id)).state is BulkJobState.RUNNING


@pytest.mark.parametrize("job_id", ["", "no spaces", "x" * 64])
async def test_a_malformed_job_id_names_the_field(world: World, job_id: str) -> None:
    for call in (
        lambda: getter(world).execute(ALICE, job_id),
        lambda: lister(world).execute(ALICE, job_id, 0, ""),
        lambda: canceller(world).execute(ALICE, job_id),
    ):
        with pytest.raises(ValidationFailed) as info:
            await call()
        assert [v.field for v in info.value.violations] == ["job_id"]


# -- ListBulkJobRecipients --------------------------------------------------------------------


async def test_pages_walk_every_recipient_in_position_order(world: World) -> None:
    outcome = await send(world, command(mixed(world)))
    seen = []
    token = ""
    pages = 0
    while True:
        page, token = await lister(world).execute(ALICE, outcome.job.id, 300, token)
        pages += 1
        seen += page
        if not token:
            break
    assert pages == 4
    assert [v.recipient.position for v in seen] == list(range(1000))
    bad, suppressed, ok = seen[10], seen[11], seen[12]
    assert bad.recipient.refusal is not None
    assert bad.recipient.refusal.field == "recipients[10].address.email"
    assert (bad.recipient.notification_id, bad.status) == (None, None)
    assert suppressed.status is Status.SUPPRESSED
    assert "opted out" in suppressed.status_reason
    assert ok.status is Status.QUEUED
    assert ok.recipient.notification_id == outcome.results[12].notification.id  # type: ignore[union-attr]
    assert (ok.recipient.request_id, ok.recipient.call_index) == ("call-1", 12)


async def test_page_size_edges(world: World) -> None:
    outcome = await send(world, command(mixed(world)))
    list_ = lister(world)
    page, token = await list_.execute(ALICE, outcome.job.id, 0, "")
    assert (len(page), bool(token)) == (100, True)
    page, token = await list_.execute(ALICE, outcome.job.id, 1, "")
    assert [v.recipient.position for v in page] == [0]
    page, token = await list_.execute(ALICE, outcome.job.id, 1, token)
    assert [v.recipient.position for v in page] == [1]
    # The last page exactly full: no token to an empty page.
    page, token = await list_.execute(ALICE, outcome.job.id, 1000, "")
    assert (len(page), token) == (1000, "")
    for size in (1001, -1):
        with pytest.raises(ValidationFailed) as info:
            await list_.execute(ALICE, outcome.job.id, size, "")
        assert [v.field for v in info.value.violations] == ["page_size"]


async def test_a_token_of_another_job_or_not_ours_is_invalid(world: World) -> None:
    first = await send(world, command(mixed(world, 5)))
    second = await send(world, command(mixed(world, 5), request_id="call-2"))
    _, token = await lister(world).execute(ALICE, first.job.id, 2, "")
    assert token
    for bad in (token, "not-a-token", token[:-4]):
        with pytest.raises(ValidationFailed) as info:
            await lister(world).execute(ALICE, second.job.id, 2, bad)
        assert [v.field for v in info.value.violations] == ["page_token"]


# -- extension ----------------------------------------------------------------------------


async def test_two_calls_to_one_job_continue_its_positions_and_add_up(world: World) -> None:
    first = await send(world, command(mixed(world, 30), job_id="spring"))
    second = await send(
        world, command(mixed(world, 20)[::-1], request_id="call-2", job_id="spring")
    )
    assert first.job.id == second.job.id == "spring"
    assert (first.first_position, second.first_position) == (0, 30)

    report = await getter(world).execute(ALICE, "spring")
    assert (report.job.recipient_count, report.job.call_count) == (50, 2)
    assert report.progress.refused == 3 + 2
    assert report.progress.accepted == 27 + 18
    page, _ = await lister(world).execute(ALICE, "spring", 1000, "")
    assert [v.recipient.position for v in page] == list(range(50))
    assert {v.recipient.request_id for v in page[30:]} == {"call-2"}
    assert [v.recipient.call_index for v in page[30:]] == list(range(20))

    again = await send(world, command(mixed(world, 20)[::-1], request_id="call-2", job_id="spring"))
    assert again.replayed
    assert accepted_ids(again) == accepted_ids(second)
    assert [r.refusal for r in again.results] == [r.refusal for r in second.results]
    report = await getter(world).execute(ALICE, "spring")
    assert (report.job.recipient_count, report.job.call_count) == (50, 2)
    assert report.progress.accepted + report.progress.refused == 50


# -- CancelBulkJob ------------------------------------------------------------------------


async def test_cancel_stops_what_is_not_sending_yet(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small chunks: several transactions, each cancelling its share.
    monkeypatch.setattr(bulk_jobs, "CANCEL_CHUNK", 7)
    recipients = mixed(world, 40)
    outcome = await send(
        world, command(recipients, scheduled_at=T0 + timedelta(minutes=1), job_id="later")
    )
    queued = [
        r.notification.id
        for r in outcome.results
        if r.notification is not None and r.notification.status is Status.QUEUED
    ]
    assert len(queued) == 32
    progress_to(world, queued[0], sent)
    progress_to(world, queued[1], sending)
    commits = world.db.commits

    done = await canceller(world).execute(ALICE, "later")

    assert done.cancelled == 30
    assert done.report.state is BulkJobState.CANCELLED
    assert done.report.job.cancelled_at == T0
    p = done.report.progress
    assert (p.cancelled, p.sent, p.queued, p.suppressed, p.refused) == (30, 1, 1, 4, 4)
    assert sorted(world.scheduler.removed) == sorted(queued[2:])
    # The one being sent keeps the request (its worker acks it): no further attempt.
    being_sent = world.db.notifications[queued[1]]
    assert (being_sent.status, being_sent.cancel_requested_at) == (Status.SENDING, T0)
    # The job, then 30 notifications 7 at a time.
    assert world.db.commits - commits == 1 + 5

    again = await canceller(world).execute(ALICE, "later")
    assert again.cancelled == 0
    assert again.report.progress.cancelled == 30
    assert again.report.job.cancelled_at == T0

    with pytest.raises(PreconditionFailed) as info:
        await send(world, command(mixed(world, 2), request_id="call-2", job_id="later"))
    assert info.value.reason == "BULK_JOB_CANCELLED"
    assert (await getter(world).execute(ALICE, "later")).job.recipient_count == 40


async def test_cancel_of_an_unknown_job_is_not_found(world: World) -> None:
    with pytest.raises(NotFound):
        await canceller(world).execute(ALICE, "nope")
    assert world.db.commits == 0


def one_recipient(user: str = "u1") -> list[BulkRecipientInput]:
    return [BulkRecipientInput(user, AddressInput("email", f"{user}@example.com"))]


class CancelledWhileSending:
    """An email provider that times out; the first time, the job is cancelled meanwhile."""

    channel = Channel.EMAIL

    def __init__(self, world: World, job_id: str) -> None:
        self._world = world
        self._job_id = job_id
        self.sent = 0

    async def send(self, notification: Notification) -> Delivered:
        self.sent += 1
        if self.sent == 1:
            await canceller(self._world).execute(ALICE, self._job_id)
        raise failure(ErrorClass.TRANSIENT, "timeout", provider="smtp")


async def test_one_being_sent_when_its_job_is_cancelled_is_not_sent_again(world: World) -> None:
    outcome = await send(world, command(one_recipient(), job_id="racy"))
    [nid] = accepted_ids(outcome)
    sender = CancelledWhileSending(world, "racy")
    policy = RetryPolicy(max_attempts=5, base_delay=timedelta(seconds=1))
    deliver = DeliverNotification(
        world.uow,
        world.scheduler,
        {Channel.EMAIL: sender},
        {Channel.EMAIL: policy},
        world.clock,
        random=lambda: 0.5,
    )
    lease = timedelta(seconds=30)

    [claim] = await world.scheduler.claim(1, world.clock.now(), lease)
    # The worker's outcome is recorded although the cancel wrote to the row meanwhile.
    assert await deliver.execute(claim) is not None
    assert world.db.row(nid).cancel_requested_at == T0
    # Whatever the worker did with its transient failure, nothing is tried again.
    world.clock.advance(timedelta(minutes=10))
    for claim in await world.scheduler.claim(10, world.clock.now(), lease):
        await deliver.execute(claim)

    assert sender.sent == 1
    row = world.db.row(nid)
    assert row.status is Status.CANCELLED
    assert "cancelled by caller" in row.status_reason
    assert world.scheduler.waiting == {}
    assert world.scheduler.leased == {}
    report = await getter(world).execute(ALICE, "racy")
    assert (report.progress.cancelled, report.progress.queued) == (1, 0)
    assert report.state is BulkJobState.CANCELLED


async def test_a_dead_letter_of_a_cancelled_job_cannot_be_replayed(world: World) -> None:
    outcome = await send(world, command(mixed(world, 5)[2:], job_id="dead"))
    ids = accepted_ids(outcome)
    progress_to(world, ids[0], failed)

    done = await canceller(world).execute(ALICE, "dead")

    assert done.cancelled == len(ids) - 1
    dead = world.db.row(ids[0])
    assert (dead.status, dead.cancel_requested_at) == (Status.FAILED, T0)
    enqueued = len(world.scheduler.enqueued)
    with pytest.raises(PreconditionFailed) as info:
        await ReplayDeadLetters(world.uow, world.scheduler, world.clock).execute(ALICE, [ids[0]])
    assert info.value.reason == "CANCEL_REQUESTED"
    assert world.db.row(ids[0]).status is Status.FAILED
    assert len(world.scheduler.enqueued) == enqueued


async def test_one_claimed_between_the_sweeps_load_and_save_is_loaded_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcome = await send(world, command(mixed(world, 6)[2:], job_id="moving"))
    ids = accepted_ids(outcome)
    claimed = ids[1]
    load = FakeNotificationRepository.get_many
    loads: list[list[str]] = []

    async def load_then_a_worker_claims(
        repo: FakeNotificationRepository,
        tenant_id: str,
        wanted: list[str],
        *,
        for_update: bool = False,
    ) -> list[Notification]:
        found = await load(repo, tenant_id, wanted, for_update=for_update)
        loads.append(list(wanted))
        if len(loads) == 1:
            progress_to(world, claimed, sending)  # committed after our load, before our save
        return found

    monkeypatch.setattr(FakeNotificationRepository, "get_many", load_then_a_worker_claims)
    version = world.db.notifications[claimed].version

    done = await canceller(world).execute(ALICE, "moving")

    assert done.cancelled == len(ids) - 1
    assert sorted(world.scheduler.removed) == sorted(i for i in ids if i != claimed)
    assert loads[1] == [claimed], "only the one that moved is loaded again"
    # The sweep saves what it loads: it holds the rows meanwhile, each round.
    assert world.db.notification_locks == [*sorted(ids), claimed]
    row = world.db.row(claimed)
    assert (row.status, row.cancel_requested_at) == (Status.SENDING, T0)
    # The request did not move the version: the worker can still record its attempt.
    assert row.version == version + 1
    assert done.report.state is BulkJobState.CANCELLED


async def test_one_that_keeps_moving_gives_up_after_a_few_rounds(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcome = await send(world, command(mixed(world, 6)[2:], job_id="restless"))
    ids = accepted_ids(outcome)
    load = FakeNotificationRepository.get_many

    async def load_then_touch(
        repo: FakeNotificationRepository,
        tenant_id: str,
        wanted: list[str],
        *,
        for_update: bool = False,
    ) -> list[Notification]:
        found = await load(repo, tenant_id, wanted, for_update=for_update)
        world.db.touch(ids[0])
        return found

    monkeypatch.setattr(FakeNotificationRepository, "get_many", load_then_touch)

    with pytest.raises(ConcurrentUpdate):
        await canceller(world).execute(ALICE, "restless")
    # The others were cancelled and left the queue all the same.
    assert sorted(world.scheduler.removed) == sorted(ids[1:])
    assert world.db.row(ids[0]).status is Status.QUEUED
