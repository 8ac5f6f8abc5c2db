"""The recipient and category repositories against the real, migrated PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from application.errors import ConcurrentUpdate
from domain.notification import Address, Channel
from domain.policy import CapAction, Category, CategoryKind, Limits
from domain.recipient import (
    CategoryCap,
    ChannelPreference,
    DevicePlatform,
    Preferences,
    Profile,
    QuietHours,
    Recipient,
    WebhookEndpoint,
)
from infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 9, 0, 0, 123456, tzinfo=UTC)
SECRET = "whsec_" + "QUJD" * 8


@pytest.fixture
async def db(uow: SqlUnitOfWorkFactory, clean_db: AsyncEngine) -> SqlUnitOfWorkFactory:
    # The shared clean_db fixture predates these tables.
    async with clean_db.begin() as conn:
        await conn.execute(sa.text("TRUNCATE recipients, categories"))
    return uow


def full_recipient(tenant: str = "tenant-a", user: str = "u1") -> Recipient:
    prefs = Preferences(
        channels=(
            ChannelPreference("*", None, True),
            ChannelPreference("promo", Channel.EMAIL, False),
        ),
        marketing_opt_out=True,
        quiet_hours=QuietHours(time(22, 30), time(7, 0)),
        caps=(CategoryCap("promo", Limits(1, 3)), CategoryCap("news", Limits(0, 10))),
    )
    profile = Profile(
        email=Address("email", "ada@example.com"),
        phone=Address("phone", "+41791234567"),
        devices=((DevicePlatform.IOS, "tok-a"), (DevicePlatform.WEB, "tok-b")),
        webhook=WebhookEndpoint("https://hooks.example.com/ada", SECRET),
        locale="de-CH",
        time_zone="Europe/Zurich",
    )
    r = Recipient.register(tenant, user, profile, prefs, T0)
    r.invalidate_device("tok-a", T0 + timedelta(minutes=1))
    r.disable_webhook("https://hooks.example.com/ada", T0 + timedelta(minutes=2))
    return r


async def store(db: SqlUnitOfWorkFactory, r: Recipient) -> None:
    async with db() as uow:
        await uow.recipients.save(r)
        await uow.commit()


async def load(db: SqlUnitOfWorkFactory, tenant: str, user: str) -> Recipient | None:
    async with db() as uow:
        return await uow.recipients.get(tenant, user)


async def test_every_field_survives_a_round_trip(db: SqlUnitOfWorkFactory) -> None:
    r = full_recipient()
    await store(db, r)
    assert r.version == 1
    loaded = await load(db, "tenant-a", "u1")
    assert loaded == r
    assert loaded is not None
    assert loaded.devices[0].invalidated_at == T0 + timedelta(minutes=1)
    assert loaded.webhook is not None
    assert loaded.webhook.disabled_at == T0 + timedelta(minutes=2)


async def test_a_bare_recipient_round_trips(db: SqlUnitOfWorkFactory) -> None:
    r = Recipient.register("tenant-a", "bare", Profile(), None, T0)
    await store(db, r)
    assert await load(db, "tenant-a", "bare") == r


async def test_times_keep_their_instant_whatever_the_offset(db: SqlUnitOfWorkFactory) -> None:
    plus2 = timezone(timedelta(hours=2))
    r = full_recipient()
    r.invalidate_device("tok-b", T0.astimezone(plus2))
    await store(db, r)
    loaded = await load(db, "tenant-a", "u1")
    assert loaded is not None
    assert loaded.devices[1].invalidated_at == T0


async def test_updates_are_compare_and_set(db: SqlUnitOfWorkFactory) -> None:
    await store(db, full_recipient())
    mine = await load(db, "tenant-a", "u1")
    theirs = await load(db, "tenant-a", "u1")
    assert mine is not None
    assert theirs is not None

    theirs.unsubscribe_from_marketing(T0 + timedelta(hours=1))
    theirs.update_profile(Profile(locale="fr"), T0 + timedelta(hours=1))
    await store(db, theirs)
    assert theirs.version == 2

    mine.set_preferences(Preferences(), T0 + timedelta(hours=2))
    with pytest.raises(ConcurrentUpdate):
        await store(db, mine)
    stored = await load(db, "tenant-a", "u1")
    assert stored is not None
    assert stored.locale == "fr"
    assert stored.version == 2


async def test_two_first_inserts_of_one_user_conflict(db: SqlUnitOfWorkFactory) -> None:
    await store(db, Recipient.register("tenant-a", "u1", Profile(), None, T0))
    with pytest.raises(ConcurrentUpdate):
        await store(db, Recipient.register("tenant-a", "u1", Profile(locale="en"), None, T0))


async def test_tenants_are_isolated(db: SqlUnitOfWorkFactory) -> None:
    await store(db, full_recipient("tenant-a", "u1"))
    await store(db, Recipient.register("tenant-b", "u1", Profile(locale="ja"), None, T0))
    a = await load(db, "tenant-a", "u1")
    b = await load(db, "tenant-b", "u1")
    assert a is not None
    assert b is not None
    assert (a.locale, b.locale) == ("de-CH", "ja")
    async with db() as uow:
        assert set(await uow.recipients.get_many("tenant-b", ["u1", "u2"])) == {"u1"}
        assert await uow.recipients.get_many("tenant-c", ["u1"]) == {}
        assert not await uow.recipients.delete("tenant-c", "u1")
        await uow.commit()
    assert await load(db, "tenant-a", "u1") is not None


async def test_delete_removes_the_row_only_when_committed(db: SqlUnitOfWorkFactory) -> None:
    await store(db, full_recipient())
    async with db() as uow:
        assert await uow.recipients.delete("tenant-a", "u1")
        # no commit: rolled back
    assert await load(db, "tenant-a", "u1") is not None
    async with db() as uow:
        assert await uow.recipients.delete("tenant-a", "u1")
        await uow.commit()
    assert await load(db, "tenant-a", "u1") is None
    async with db() as uow:
        assert not await uow.recipients.delete("tenant-a", "u1")


# -- categories ----------------------------------------------------------------------------------


def category(name: str, **kw: object) -> Category:
    fields: dict[str, object] = {
        "kind": CategoryKind.MARKETING,
        "limits": Limits(2, 5),
        "cap_action": CapAction.HOLD,
        "dedup_window": timedelta(minutes=5),
        "updated_at": T0,
    }
    fields.update(kw)
    return Category(name, **fields)  # type: ignore[arg-type]


async def test_categories_round_trip_replace_and_page(db: SqlUnitOfWorkFactory) -> None:
    async with db() as uow:
        for name in ["c", "a", "b"]:
            await uow.categories.put("tenant-a", category(name))
        await uow.categories.put("tenant-b", category("a", kind=CategoryKind.TRANSACTIONAL))
        await uow.commit()
    replaced = category("b", dedup_window=None, cap_action=CapAction.SUPPRESS, limits=Limits())
    zero = category("c", dedup_window=timedelta(0))
    async with db() as uow:
        await uow.categories.put("tenant-a", replaced)
        await uow.categories.put("tenant-a", zero)
        await uow.commit()
    async with db() as uow:
        assert await uow.categories.get("tenant-a", "a") == category("a")
        assert await uow.categories.get("tenant-a", "b") == replaced
        assert await uow.categories.get("tenant-a", "c") == zero
        assert await uow.categories.get("tenant-a", "zzz") is None
        b_side = await uow.categories.get("tenant-b", "a")
        assert b_side is not None
        assert b_side.kind is CategoryKind.TRANSACTIONAL
        assert [c.name for c in await uow.categories.list("tenant-a", "", 2)] == ["a", "b"]
        assert [c.name for c in await uow.categories.list("tenant-a", "b", 2)] == ["c"]
        assert [c.name for c in await uow.categories.list("tenant-b", "", 10)] == ["a"]
