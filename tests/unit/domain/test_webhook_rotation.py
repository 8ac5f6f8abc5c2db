"""Rotating a recipient endpoint's own webhook secret: the replaced secret keeps signing for an
overlap (the tenant's rotation: tests/unit/application/test_webhook_secret_rotation.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.recipient import Profile, Recipient, WebhookEndpoint

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
HOOK = "https://hooks.example.com/u1"
OLD, NEW = "whsec_b2xk", "whsec_bmV3"


# -- a recipient's endpoint -------------------------------------------------------------------


def registered(endpoint: WebhookEndpoint | None) -> Recipient:
    return Recipient.register("tenant-a", "u1", Profile(webhook=endpoint), None, T0)


def test_a_new_secret_for_the_same_url_keeps_the_old_one_signing_for_the_overlap() -> None:
    r = registered(WebhookEndpoint(HOOK, OLD))
    r.update_profile(Profile(webhook=WebhookEndpoint(HOOK, NEW)), T0 + HOUR, secret_overlap=HOUR)
    assert r.webhook == WebhookEndpoint(
        HOOK, NEW, previous_secret=OLD, previous_secret_expires_at=T0 + 2 * HOUR
    )
    assert r.webhook.previous_signer(T0 + HOUR) == OLD
    assert r.webhook.previous_signer(T0 + 2 * HOUR) is None


def test_the_overlap_defaults_to_a_day() -> None:
    r = registered(WebhookEndpoint(HOOK, OLD))
    r.update_profile(Profile(webhook=WebhookEndpoint(HOOK, NEW)), T0)
    assert r.webhook is not None
    assert r.webhook.previous_secret_expires_at == T0 + timedelta(hours=24)


def test_moving_from_the_tenants_secret_to_an_own_one_keeps_the_tenants_signing() -> None:
    r = registered(WebhookEndpoint(HOOK))
    r.update_profile(Profile(webhook=WebhookEndpoint(HOOK, NEW)), T0, secret_overlap=HOUR)
    assert r.webhook is not None
    # '' stands for the tenant's secret, which the receiver verified with until now.
    assert r.webhook.previous_signer(T0) == ""
    assert r.webhook.previous_signer(T0 + HOUR) is None


def test_the_same_secret_again_changes_nothing() -> None:
    r = registered(WebhookEndpoint(HOOK, OLD))
    r.update_profile(Profile(webhook=WebhookEndpoint(HOOK, NEW)), T0, secret_overlap=HOUR)
    before = r.webhook
    r.update_profile(Profile(webhook=WebhookEndpoint(HOOK, NEW)), T0 + 0.5 * HOUR)
    assert r.webhook == before, "re-sending the profile must not extend or drop the overlap"


def test_a_new_url_drops_the_previous_secret() -> None:
    r = registered(WebhookEndpoint(HOOK, OLD))
    r.update_profile(Profile(webhook=WebhookEndpoint(HOOK, NEW)), T0)
    r.update_profile(Profile(webhook=WebhookEndpoint("https://new.example.com/", NEW)), T0)
    assert r.webhook == WebhookEndpoint("https://new.example.com/", NEW)
    assert r.webhook.previous_signer(T0) is None


def test_a_rotation_enables_a_disabled_endpoint_again() -> None:
    r = registered(WebhookEndpoint(HOOK, OLD))
    assert r.disable_webhook(HOOK, T0)
    r.update_profile(Profile(webhook=WebhookEndpoint(HOOK, NEW)), T0 + HOUR)
    assert r.webhook is not None
    assert r.webhook.disabled_at is None
    assert r.webhook.previous_secret == OLD


def test_removing_the_endpoint_removes_its_secrets() -> None:
    r = registered(WebhookEndpoint(HOOK, OLD))
    r.update_profile(Profile(webhook=WebhookEndpoint(HOOK, NEW)), T0)
    r.update_profile(Profile(), T0)
    assert r.webhook is None
