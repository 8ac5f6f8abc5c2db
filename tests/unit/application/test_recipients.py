"""Recipient use cases with fakes: input checking, upsert, preferences, and erasure."""

from __future__ import annotations

from datetime import timedelta

import pytest

from application.ports.scheduler import QueueItem
from application.principal import Principal
from application.use_cases.deliver_notification import DeliverNotification
from application.use_cases.recipient_input import (
    CapInput,
    ChannelPreferenceInput,
    DeviceInput,
    PreferencesInput,
    QuietHoursInput,
    RecipientInput,
    WebhookInput,
)
from application.use_cases.recipients import (
    ERASE_PAGE_SIZE,
    DeleteRecipient,
    GetRecipient,
    UnsubscribeFromMarketing,
    UpdatePreferences,
    UpsertOutcome,
    UpsertRecipient,
)
from domain.errors import NotFound, ValidationFailed
from domain.notification import ERASED_REASON, Channel, DeliveryResult, RetryPolicy, Status
from domain.recipient import DevicePlatform
from tests.unit.application.fakes import FakeSender, World, delivered, make_notification

ALICE = Principal("tenant-a", "orders", "key-a")
BOB = Principal("tenant-b", "billing", "key-b")
SECRET = "whsec_" + "QUJD" * 8  # base64 of 24 bytes


def ada(**kw: object) -> RecipientInput:
    fields: dict[str, object] = {
        "user_id": "user-1",
        "email": "ada@example.com",
        "phone": "+41791234567",
        "devices": [DeviceInput("IOS", "tok-a"), DeviceInput("ANDROID", "tok-b")],
        "webhook": WebhookInput("https://hooks.example.com/ada", SECRET),
        "locale": "de_ch",
        "time_zone": "Europe/Zurich",
    }
    fields.update(kw)
    return RecipientInput(**fields)  # type: ignore[arg-type]


def quiet(start: str = "22:00", end: str = "07:00") -> PreferencesInput:
    return PreferencesInput(quiet_hours=QuietHoursInput(start, end))


async def upsert(
    world: World, recipient: RecipientInput, prefs: PreferencesInput | None = None
) -> UpsertOutcome:
    return await UpsertRecipient(world.uow, world.clock).execute(ALICE, recipient, prefs)


async def refused(
    world: World, recipient: RecipientInput, prefs: PreferencesInput | None = None
) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        await upsert(world, recipient, prefs)
    assert world.db.recipients == {}, "nothing is stored"
    return {v.field: v.description for v in caught.value.violations}


# -- input ---------------------------------------------------------------------------------------


async def test_every_bad_field_is_named_at_once(world: World) -> None:
    bad = ada(
        user_id="",
        email="not-an-email",
        phone="0791234567",
        devices=[DeviceInput("", "tok-a"), DeviceInput("IOS", " ")],
        webhook=WebhookInput("ftp://hooks.example.com/", "secret"),
        locale="english please",
        time_zone="Mars/Olympus",
    )
    prefs = PreferencesInput(
        channels=[
            ChannelPreferenceInput("promo", "", False),
            ChannelPreferenceInput("promo", "99", True),
            ChannelPreferenceInput(" ", "EMAIL", True),
        ],
        quiet_hours=QuietHoursInput("25:00", "07:00"),
        caps=[CapInput("promo", -1, 10)],
    )
    fields = await refused(world, bad, prefs)
    assert set(fields) == {
        "recipient.user_id",
        "recipient.email",
        "recipient.phone",
        "recipient.devices[0].platform",
        "recipient.devices[1].token",
        "recipient.webhook.url",
        "recipient.webhook.secret",
        "recipient.locale",
        "recipient.time_zone",
        "recipient.preferences.channels[1].channel",
        "recipient.preferences.channels[2].category",
        "recipient.preferences.quiet_hours.start",
        "recipient.preferences.caps[0].per_hour",
    }
    assert "email" in fields["recipient.email"]
    assert "E.164" in fields["recipient.phone"]


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [("25:00", "07:00", "start"), ("22:00", "7pm", "end"), ("22:00", "22:00", "end")],
)
async def test_bad_quiet_hours_are_refused(world: World, start: str, end: str, field: str) -> None:
    fields = await refused(world, ada(), quiet(start, end))
    assert list(fields) == [f"recipient.preferences.quiet_hours.{field}"]


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_" + "QUJD" * 4,  # 12 bytes: too short
        "whsec_" + "QUJD" * 30,  # 90 bytes: too long
        "whsec_not base64!",
        "QUJD" * 8,  # no prefix
    ],
)
async def test_bad_webhook_secrets_are_refused(world: World, secret: str) -> None:
    fields = await refused(world, ada(webhook=WebhookInput("https://h.example.com/", secret)))
    assert list(fields) == ["recipient.webhook.secret"]


async def test_a_repeated_device_token_is_refused(world: World) -> None:
    devices = [DeviceInput("IOS", "tok-a"), DeviceInput("WEB", "tok-a")]
    fields = await refused(world, ada(devices=devices))
    assert fields == {"recipient.devices[1].token": "repeats recipient.devices[0]"}


async def test_a_webhook_without_url_is_refused(world: World) -> None:
    fields = await refused(world, ada(webhook=WebhookInput("", "")))
    assert list(fields) == ["recipient.webhook.url"]


async def test_a_loopback_webhook_is_left_to_the_ssrf_guard(world: World) -> None:
    outcome = await upsert(world, ada(webhook=WebhookInput("http://127.0.0.1:8080/hook")))
    assert outcome.recipient.webhook is not None
    assert outcome.recipient.webhook.url == "http://127.0.0.1:8080/hook"


# -- upsert and get ------------------------------------------------------------------------------


async def test_upsert_creates_then_updates(world: World) -> None:
    first = await upsert(world, ada(), quiet())
    assert first.created
    r = first.recipient
    assert r.locale == "de-CH", "the locale is stored in canonical form"
    assert [(d.platform, d.token) for d in r.devices] == [
        (DevicePlatform.IOS, "tok-a"),
        (DevicePlatform.ANDROID, "tok-b"),
    ]
    assert r.webhook is not None
    assert r.webhook.secret == SECRET

    world.clock.advance(timedelta(minutes=5))
    second = await upsert(world, ada(email="", phone="+14155550123"))
    assert not second.created
    stored = await GetRecipient(world.uow).execute(ALICE, "user-1")
    assert stored.email is None
    assert stored.phone is not None
    assert stored.phone.value == "+14155550123"
    assert stored.preferences.quiet_hours is not None, "preferences unset keeps the stored ones"
    assert stored.created_at < stored.updated_at == world.clock.now()


async def test_upsert_with_preferences_replaces_them(world: World) -> None:
    await upsert(world, ada(), quiet())
    await upsert(world, ada(), PreferencesInput(marketing_opt_out=True))
    stored = await GetRecipient(world.uow).execute(ALICE, "user-1")
    assert stored.preferences.quiet_hours is None
    assert stored.preferences.marketing_opt_out


async def test_get_is_per_tenant(world: World) -> None:
    await upsert(world, ada())
    with pytest.raises(NotFound):
        await GetRecipient(world.uow).execute(BOB, "user-1")
    with pytest.raises(ValidationFailed):
        await GetRecipient(world.uow).execute(ALICE, "")


# -- preferences ---------------------------------------------------------------------------------


async def test_update_preferences_creates_a_bare_recipient(world: World) -> None:
    prefs = PreferencesInput(
        channels=[ChannelPreferenceInput("promo", "EMAIL", False)],
        caps=[CapInput("promo", 1, 3)],
    )
    r = await UpdatePreferences(world.uow, world.clock).execute(ALICE, "new-user", prefs)
    assert r.email is None
    assert r.preferences.limits_for("promo").per_day == 3
    assert "promo" in r.preferences.opt_out_reason("promo", Channel.EMAIL, marketing=False)
    assert (await GetRecipient(world.uow).execute(ALICE, "new-user")).version == 1


async def test_update_preferences_names_its_fields(world: World) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await UpdatePreferences(world.uow, world.clock).execute(
            ALICE, "", PreferencesInput(caps=[CapInput("promo", 5, 2)])
        )
    assert [v.field for v in caught.value.violations] == ["user_id", "preferences.caps[0].per_hour"]


async def test_update_preferences_keeps_the_profile(world: World) -> None:
    await upsert(world, ada())
    await UpdatePreferences(world.uow, world.clock).execute(ALICE, "user-1", quiet())
    r = await GetRecipient(world.uow).execute(ALICE, "user-1")
    assert r.email is not None
    assert r.preferences.quiet_hours is not None


async def test_unsubscribe_from_marketing_keeps_everything_else(world: World) -> None:
    await upsert(world, ada(), quiet())
    r = await UnsubscribeFromMarketing(world.uow, world.clock).execute(ALICE, "user-1")
    assert r.preferences.marketing_opt_out
    assert r.preferences.quiet_hours is not None
    assert r.email is not None


async def test_unsubscribe_creates_a_missing_recipient(world: World) -> None:
    r = await UnsubscribeFromMarketing(world.uow, world.clock).execute(ALICE, "someone")
    assert r.preferences.marketing_opt_out
    assert ("tenant-a", "someone") in world.db.recipients


# -- erasure -------------------------------------------------------------------------------------


def delete(world: World) -> DeleteRecipient:
    return DeleteRecipient(world.uow, world.scheduler, world.clock)


@pytest.fixture
def history(world: World) -> World:
    """user-1 has a queued webhook, a delivered email and an in-app one; user-2 one queued."""
    queued = make_notification("n-1", channel=Channel.WEBHOOK)
    sent = make_notification("n-2", channel=Channel.EMAIL)
    sent.begin_attempt(sent.updated_at)
    sent.record_success(sent.updated_at, DeliveryResult("smtp", "m-1", delivered=True))
    inbox = delivered("n-3")
    other = make_notification("n-4", user_id="user-2", channel=Channel.WEBHOOK)
    world.db.insert(queued, sent, inbox, other)
    for n in (queued, other):
        world.scheduler.waiting[n.id] = QueueItem(n.id, n.priority, n.due_at)
    return world


async def test_delete_erases_the_directory_entry_and_the_records(history: World) -> None:
    await upsert(history, ada())
    before = history.db.row("n-2")

    outcome = await delete(history).execute(ALICE, "user-1")

    assert (outcome.erased, outcome.cancelled) == (3, 1)
    assert ("tenant-a", "user-1") not in history.db.recipients
    queued = history.db.row("n-1")
    assert queued.status is Status.CANCELLED
    assert queued.status_reason == ERASED_REASON
    assert queued.address is not None
    assert queued.address.value == ""
    assert (queued.content.title, queued.content.body) == ("", "")
    sent = history.db.row("n-2")
    assert sent.status is before.status
    assert sent.content_hash == before.content_hash
    assert sent.content_hash
    assert sent.address is not None
    assert sent.address.value == ""
    assert sent.attempts == before.attempts, "the proof of delivery stays"
    assert history.db.row("n-4").content.title == "title", "another user's record is untouched"
    assert history.scheduler.removed == ["n-1"]
    assert "n-4" in history.scheduler.waiting


async def test_a_stale_claim_of_an_erased_notification_sends_nothing(history: World) -> None:
    del history.scheduler.waiting["n-4"]
    [claim] = await history.scheduler.claim(1, history.clock.now(), timedelta(seconds=30))
    assert claim.notification_id == "n-1"
    await delete(history).execute(ALICE, "user-1")
    sender = FakeSender(Channel.WEBHOOK, DeliveryResult("webhook", "x"))
    policy = RetryPolicy(max_attempts=3, base_delay=timedelta(seconds=1), max_delay=timedelta(1))
    worker = DeliverNotification(
        history.uow,
        history.scheduler,
        {Channel.WEBHOOK: sender},
        {Channel.WEBHOOK: policy},
        history.clock,
        random=lambda: 0.5,
    )
    await worker.execute(claim)
    assert sender.sent == []
    assert history.db.row("n-1").status is Status.CANCELLED


async def test_a_notification_being_sent_is_skipped(history: World) -> None:
    n = history.db.row("n-1")
    n.begin_attempt(history.clock.now())
    history.db.notifications["n-1"] = n

    outcome = await delete(history).execute(ALICE, "user-1")

    assert (outcome.erased, outcome.cancelled, outcome.skipped_sending) == (2, 0, 1)
    assert history.db.row("n-1").status is Status.SENDING
    assert history.db.row("n-1").erased_at is None


async def test_erasure_goes_through_every_page(world: World) -> None:
    count = ERASE_PAGE_SIZE * 2 + 1
    world.db.insert(*(make_notification(f"n-{i:04d}") for i in range(count)))

    outcome = await delete(world).execute(ALICE, "user-1")

    assert (outcome.erased, outcome.cancelled) == (count, count)
    assert all(n.erased_at is not None for n in world.db.notifications.values())
    assert world.db.commits == 3


async def test_delete_is_per_tenant_and_not_found_when_nothing_is_left(history: World) -> None:
    with pytest.raises(NotFound):
        await delete(history).execute(BOB, "user-1")
    await delete(history).execute(ALICE, "user-1")
    with pytest.raises(NotFound):
        await delete(history).execute(ALICE, "user-1")


async def test_delete_of_a_recipient_without_records(world: World) -> None:
    await upsert(world, ada())
    outcome = await delete(world).execute(ALICE, "user-1")
    assert (outcome.erased, outcome.cancelled) == (0, 0)
    with pytest.raises(NotFound):
        await GetRecipient(world.uow).execute(ALICE, "user-1")
