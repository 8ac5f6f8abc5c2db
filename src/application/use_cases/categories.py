"""Categories: define one, read one, page through them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from application.ports.clock import Clock
from application.ports.repositories import UnitOfWorkFactory
from application.principal import Principal
from application.use_cases.paging import after_name, name_page, page_size
from domain.errors import NotFound, ValidationFailed, Violations
from domain.policy import CapAction, Category, CategoryKind


@dataclass(frozen=True, slots=True)
class CategoryInput:
    name: str
    # A CategoryKind value; '' when unset (refused).
    kind: str
    per_hour_cap: int = 0
    per_day_cap: int = 0
    # A CapAction value; '' when unset (SUPPRESS).
    cap_action: str = ""
    # None: the service default; 0: no duplicate detection.
    dedup_window_seconds: int | None = None


# Category.define names the caps after Limits ("per_hour"); the contract says per_hour_cap.
_CONTRACT_FIELDS = {
    "category.per_hour": "category.per_hour_cap",
    "category.per_day": "category.per_day_cap",
}


def parse_category(category: CategoryInput, now: datetime) -> Category:
    v = Violations()
    kind: CategoryKind | None = None
    if category.kind in CategoryKind.__members__:
        kind = CategoryKind(category.kind)
    elif category.kind:
        v.add("category.kind", f"unknown kind {category.kind}: TRANSACTIONAL or MARKETING")
    action = CapAction.SUPPRESS
    if category.cap_action in CapAction.__members__:
        action = CapAction(category.cap_action)
    elif category.cap_action:
        v.add("category.cap_action", f"unknown cap action {category.cap_action}: SUPPRESS or HOLD")
    try:
        defined = Category.define(
            category.name,
            kind,
            per_hour=category.per_hour_cap,
            per_day=category.per_day_cap,
            cap_action=action,
            dedup_window_seconds=category.dedup_window_seconds,
            now=now,
        )
    except ValidationFailed as error:
        for violation in error.violations:
            if violation.field == "category.kind" and category.kind:
                continue  # an unknown kind is already named more precisely above
            v.add(_CONTRACT_FIELDS.get(violation.field, violation.field), violation.description)
    v.raise_if_any()
    return defined


def _require_name(name: str) -> None:
    if not name.strip():
        raise ValidationFailed.single("name", "required")


class PutCategory:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow = uow
        self._clock = clock

    async def execute(self, principal: Principal, category: CategoryInput) -> Category:
        defined = parse_category(category, self._clock.now())
        async with self._uow() as uow:
            await uow.categories.put(principal.tenant_id, defined)
            await uow.commit()
        return defined


class GetCategory:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def execute(self, principal: Principal, name: str) -> Category:
        _require_name(name)
        async with self._uow() as uow:
            found = await uow.categories.get(principal.tenant_id, name)
        if found is None:
            raise NotFound("category", name)
        return found


class ListCategories:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def execute(
        self, principal: Principal, requested_size: int, page_token: str
    ) -> tuple[list[Category], str]:
        size = page_size(requested_size)
        # The listing has no filters; binding the token to the tenant keeps it from being
        # replayed by another tenant's caller.
        request = {"list": "categories", "tenant": principal.tenant_id}
        after = after_name(page_token, request)
        async with self._uow() as uow:
            found = await uow.categories.list(principal.tenant_id, after, size + 1)
        return name_page(found, size, lambda c: c.name, request)
