"""Category use cases with fakes: define, read, page through (AIP-158)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from application.principal import Principal
from application.use_cases.categories import (
    CategoryInput,
    GetCategory,
    ListCategories,
    PutCategory,
)
from domain.errors import NotFound, ValidationFailed
from domain.policy import CapAction, CategoryKind, Limits
from tests.unit.application.fakes import World

ALICE = Principal("tenant-a", "orders", "key-a")
BOB = Principal("tenant-b", "billing", "key-b")


def promo(**kw: object) -> CategoryInput:
    fields: dict[str, object] = {
        "name": "promo",
        "kind": "MARKETING",
        "per_hour_cap": 1,
        "per_day_cap": 3,
        "cap_action": "HOLD",
        "dedup_window_seconds": 600,
    }
    fields.update(kw)
    return CategoryInput(**fields)  # type: ignore[arg-type]


async def put(world: World, category: CategoryInput, who: Principal = ALICE) -> None:
    await PutCategory(world.uow, world.clock).execute(who, category)


async def test_put_then_get(world: World) -> None:
    await put(world, promo())
    c = await GetCategory(world.uow).execute(ALICE, "promo")
    assert c.kind is CategoryKind.MARKETING
    assert c.limits == Limits(1, 3)
    assert c.cap_action is CapAction.HOLD
    assert c.dedup_window == timedelta(minutes=10)
    assert c.updated_at == world.clock.now()


async def test_put_replaces_and_defaults(world: World) -> None:
    await put(world, promo())
    world.clock.advance(timedelta(hours=1))
    await put(world, promo(kind="TRANSACTIONAL", cap_action="", dedup_window_seconds=None))
    c = await GetCategory(world.uow).execute(ALICE, "promo")
    assert c.kind is CategoryKind.TRANSACTIONAL
    assert c.cap_action is CapAction.SUPPRESS, "unset cap action suppresses"
    assert c.dedup_window is None, "unset window means the service default"
    assert c.updated_at == world.clock.now()


async def test_zero_dedup_window_is_kept_apart_from_unset(world: World) -> None:
    await put(world, promo(dedup_window_seconds=0))
    c = await GetCategory(world.uow).execute(ALICE, "promo")
    assert c.dedup_window == timedelta(0)


async def test_bad_categories_name_every_field_as_the_contract_does(world: World) -> None:
    bad = promo(
        name="",
        kind="",
        per_hour_cap=-1,
        per_day_cap=5,
        cap_action="7",
        dedup_window_seconds=-5,
    )
    with pytest.raises(ValidationFailed) as caught:
        await put(world, bad)
    assert {v.field for v in caught.value.violations} == {
        "category.name",
        "category.kind",
        "category.per_hour_cap",
        "category.cap_action",
        "category.dedup_window_seconds",
    }
    assert world.db.categories == {}


async def test_an_unknown_kind_is_named_once(world: World) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await put(world, promo(kind="5"))
    [violation] = caught.value.violations
    assert violation.field == "category.kind"
    assert "unknown kind 5" in violation.description


async def test_hourly_cap_above_the_daily_one_is_refused(world: World) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await put(world, promo(per_hour_cap=10, per_day_cap=5))
    assert [v.field for v in caught.value.violations] == ["category.per_hour_cap"]


async def test_get_is_per_tenant_and_needs_a_name(world: World) -> None:
    await put(world, promo())
    with pytest.raises(NotFound):
        await GetCategory(world.uow).execute(BOB, "promo")
    with pytest.raises(ValidationFailed):
        await GetCategory(world.uow).execute(ALICE, " ")


# -- listing ---------------------------------------------------------------------------------------


async def names_in_pages(world: World, size: int, who: Principal = ALICE) -> list[list[str]]:
    pages: list[list[str]] = []
    token = ""
    while True:
        page, token = await ListCategories(world.uow).execute(who, size, token)
        pages.append([c.name for c in page])
        if not token:
            return pages


async def test_pages_by_name_without_gaps_or_repeats(world: World) -> None:
    for name in ["e", "a", "d", "c", "b"]:
        await put(world, promo(name=name))
    await put(world, promo(name="z"), BOB)
    assert await names_in_pages(world, 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert await names_in_pages(world, 5) == [["a", "b", "c", "d", "e"]]
    assert await names_in_pages(world, 0) == [["a", "b", "c", "d", "e"]], "0 is the default"


async def test_a_category_added_between_pages_is_seen_once(world: World) -> None:
    for name in ["a", "c"]:
        await put(world, promo(name=name))
    first, token = await ListCategories(world.uow).execute(ALICE, 1, "")
    await put(world, promo(name="b"))
    second, _ = await ListCategories(world.uow).execute(ALICE, 5, token)
    assert [c.name for c in first + second] == ["a", "b", "c"]


@pytest.mark.parametrize("size", [-1, 1001])
async def test_page_size_out_of_range_is_refused(world: World, size: int) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await ListCategories(world.uow).execute(ALICE, size, "")
    assert caught.value.violations[0].field == "page_size"


async def test_the_largest_page_size_is_accepted(world: World) -> None:
    for i in range(3):
        await put(world, promo(name=f"c{i}"))
    page, token = await ListCategories(world.uow).execute(ALICE, 1000, "")
    assert (len(page), token) == (3, "")


@pytest.mark.parametrize("token", ["garbage!", "eyJ4IjogMX0=", "bm90IGpzb24="])
async def test_a_token_this_api_did_not_issue_is_refused(world: World, token: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await ListCategories(world.uow).execute(ALICE, 1, token)
    assert caught.value.violations[0].field == "page_token"


async def test_a_token_does_not_travel_to_another_tenant(world: World) -> None:
    for name in ["a", "b"]:
        await put(world, promo(name=name))
    _, token = await ListCategories(world.uow).execute(ALICE, 1, "")
    assert token
    with pytest.raises(ValidationFailed) as caught:
        await ListCategories(world.uow).execute(BOB, 1, token)
    assert caught.value.violations[0].field == "page_token"
