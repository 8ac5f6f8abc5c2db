"""Rotating a tenant's webhook signing secret: the replaced secret keeps signing, as a second
signature, until the overlap ends."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest

from application.ports.repositories import Tenant
from application.use_cases.administration import RotateWebhookSecret
from domain.errors import NotFound, ValidationFailed
from tests.unit.application.fakes import T0, FakeUnitOfWorkFactory, FixedClock

HOUR = timedelta(hours=1)
OLD, NEW, NEWER = "whsec_b2xk", "whsec_bmV3", "whsec_bmV3ZXI="


# -- the Tenant record ------------------------------------------------------------------------


def test_a_tenant_signs_with_its_secret_alone_before_any_rotation() -> None:
    assert Tenant("t", OLD).signing_secrets(T0) == [OLD]


def test_after_a_rotation_both_secrets_sign_until_the_overlap_ends() -> None:
    rotated = Tenant("t", OLD).with_rotated_secret(NEW, T0, 2 * HOUR)
    assert rotated.webhook_secret == NEW
    assert rotated.previous_secret_expires_at == T0 + 2 * HOUR
    assert rotated.signing_secrets(T0) == [NEW, OLD], "the current secret signs first"
    assert rotated.signing_secrets(T0 + 2 * HOUR - timedelta(microseconds=1)) == [NEW, OLD]
    assert rotated.signing_secrets(T0 + 2 * HOUR) == [NEW]


def test_a_zero_overlap_drops_the_old_secret_at_once() -> None:
    assert Tenant("t", OLD).with_rotated_secret(NEW, T0, timedelta(0)).signing_secrets(T0) == [NEW]


def test_a_second_rotation_drops_the_first_secret() -> None:
    twice = (
        Tenant("t", OLD)
        .with_rotated_secret(NEW, T0, 24 * HOUR)
        .with_rotated_secret(NEWER, T0 + HOUR, 24 * HOUR)
    )
    assert twice.signing_secrets(T0 + HOUR) == [NEWER, NEW]


# -- the use case -----------------------------------------------------------------------------


@pytest.fixture
def uow() -> FakeUnitOfWorkFactory:
    factory = FakeUnitOfWorkFactory()
    factory.db.tenants["acme"] = Tenant("acme", OLD)
    return factory


async def test_rotation_stores_a_new_secret_and_keeps_the_old_one_for_the_overlap(
    uow: FakeUnitOfWorkFactory,
) -> None:
    rotated = await RotateWebhookSecret(uow, FixedClock(T0), 24 * HOUR).execute("acme")

    assert uow.db.tenants["acme"] == rotated
    assert rotated.webhook_secret.startswith("whsec_")
    assert len(base64.b64decode(rotated.webhook_secret.removeprefix("whsec_"))) == 32
    assert rotated.webhook_secret != OLD
    assert rotated.previous_webhook_secret == OLD
    assert rotated.previous_secret_expires_at == T0 + 24 * HOUR


async def test_an_explicit_overlap_wins_over_the_configured_one(
    uow: FakeUnitOfWorkFactory,
) -> None:
    rotated = await RotateWebhookSecret(uow, FixedClock(T0), 24 * HOUR).execute(
        "acme", timedelta(0)
    )
    assert rotated.signing_secrets(T0) == [rotated.webhook_secret]


async def test_each_rotation_makes_a_different_secret(uow: FakeUnitOfWorkFactory) -> None:
    rotate = RotateWebhookSecret(uow, FixedClock(T0), HOUR)
    first = await rotate.execute("acme")
    second = await rotate.execute("acme")
    assert second.previous_webhook_secret == first.webhook_secret != second.webhook_secret


async def test_an_unknown_tenant_is_not_found(uow: FakeUnitOfWorkFactory) -> None:
    with pytest.raises(NotFound):
        await RotateWebhookSecret(uow, FixedClock(T0), HOUR).execute("nobody")
    assert "nobody" not in uow.db.tenants


async def test_a_negative_overlap_is_refused(uow: FakeUnitOfWorkFactory) -> None:
    with pytest.raises(ValidationFailed):
        await RotateWebhookSecret(uow, FixedClock(T0), HOUR).execute("acme", -HOUR)
    assert uow.db.tenants["acme"] == Tenant("acme", OLD)
