"""The Recipient aggregate's verbs and what its preferences say about a notification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.notification import Address, Channel
from domain.recipient import (
    ChannelPreference,
    DevicePlatform,
    Preferences,
    Profile,
    QuietHours,
    Recipient,
    WebhookEndpoint,
)

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
T2 = T0 + timedelta(hours=2)
HOOK = "https://hooks.example.com/u1"


def profile(**kw: object) -> Profile:
    fields: dict[str, object] = {
        "email": Address("email", "ada@example.com"),
        "phone": Address("phone", "+41791234567"),
        "devices": ((DevicePlatform.IOS, "tok-a"), (DevicePlatform.ANDROID, "tok-b")),
        "webhook": WebhookEndpoint(HOOK),
        "locale": "de-CH",
        "time_zone": "Europe/Zurich",
    }
    fields.update(kw)
    return Profile(**fields)  # type: ignore[arg-type]


def ada(**kw: object) -> Recipient:
    return Recipient.register("tenant-a", "u1", profile(**kw), None, T0)


# -- profile updates ---------------------------------------------------------------------------


def test_a_device_sent_again_keeps_when_it_was_added() -> None:
    r = ada()
    r.update_profile(profile(devices=((DevicePlatform.IOS, "tok-a"),)), T1)
    assert [(d.token, d.added_at) for d in r.devices] == [("tok-a", T0)]
    assert r.updated_at == T1


def test_an_invalidated_device_stays_invalid_when_the_caller_sends_it_again() -> None:
    r = ada()
    assert r.invalidate_device("tok-a", T1)
    r.update_profile(profile(), T2)
    by_token = {d.token: d for d in r.devices}
    assert by_token["tok-a"].invalidated_at == T1
    assert by_token["tok-b"].usable


def test_invalidating_an_unknown_or_dead_token_changes_nothing() -> None:
    r = ada()
    assert not r.invalidate_device("nope", T1)
    assert r.invalidate_device("tok-a", T1)
    assert not r.invalidate_device("tok-a", T2)
    assert r.updated_at == T1


def test_a_new_device_is_added_at_the_update() -> None:
    r = ada()
    r.update_profile(profile(devices=((DevicePlatform.WEB, "tok-c"),)), T1)
    assert [(d.platform, d.token, d.added_at) for d in r.devices] == [
        (DevicePlatform.WEB, "tok-c", T1)
    ]


def test_a_disabled_webhook_stays_disabled_for_the_same_url_and_secret() -> None:
    r = ada()
    assert r.disable_webhook(HOOK, T1)
    r.update_profile(profile(), T2)
    assert r.webhook is not None
    assert r.webhook.disabled_at == T1


@pytest.mark.parametrize(
    "replacement",
    [WebhookEndpoint("https://hooks.example.com/new"), WebhookEndpoint(HOOK, "whsec_new")],
    ids=["new url", "new secret"],
)
def test_a_disabled_webhook_is_enabled_again_when_replaced(replacement: WebhookEndpoint) -> None:
    r = ada()
    r.disable_webhook(HOOK, T1)
    r.update_profile(profile(webhook=replacement), T2)
    assert r.webhook is not None
    assert (r.webhook.url, r.webhook.secret, r.webhook.disabled_at) == (
        replacement.url,
        replacement.secret,
        None,
    )
    assert r.address_for(Channel.WEBHOOK) == Address("webhook_url", replacement.url)


def test_disabling_another_url_does_nothing() -> None:
    r = ada()
    assert not r.disable_webhook("https://elsewhere.example.com/", T1)
    assert r.webhook is not None
    assert r.webhook.disabled_at is None


def test_profile_without_contact_data_clears_it() -> None:
    r = ada()
    r.update_profile(Profile(), T1)
    assert (r.email, r.phone, r.devices, r.webhook, r.locale, r.time_zone) == (
        None,
        None,
        [],
        None,
        "",
        "",
    )


# -- where a notification goes ------------------------------------------------------------------


def test_address_per_channel() -> None:
    r = ada()
    assert r.address_for(Channel.EMAIL) == Address("email", "ada@example.com")
    assert r.address_for(Channel.SMS) == Address("phone", "+41791234567")
    assert r.address_for(Channel.WEBHOOK) == Address("webhook_url", HOOK)
    assert r.address_for(Channel.IN_APP) is None


def test_push_goes_to_the_newest_usable_device() -> None:
    r = ada(devices=((DevicePlatform.IOS, "tok-a"),))
    r.update_profile(
        profile(devices=((DevicePlatform.IOS, "tok-a"), (DevicePlatform.WEB, "tok-new"))), T1
    )
    assert r.address_for(Channel.PUSH) == Address("device_token", "tok-new")
    r.invalidate_device("tok-new", T2)
    assert r.address_for(Channel.PUSH) == Address("device_token", "tok-a")
    r.invalidate_device("tok-a", T2)
    assert r.address_for(Channel.PUSH) is None


def test_no_address_for_a_disabled_webhook_or_missing_contact_data() -> None:
    r = ada(email=None, phone=None)
    assert r.address_for(Channel.EMAIL) is None
    assert r.address_for(Channel.SMS) is None
    r.disable_webhook(HOOK, T1)
    assert r.address_for(Channel.WEBHOOK) is None


# -- preferences ---------------------------------------------------------------------------------


def pref(category: str, channel: Channel | None, enabled: bool) -> ChannelPreference:
    return ChannelPreference(category, channel, enabled)


def test_no_entries_means_everything_is_wanted() -> None:
    assert Preferences().opt_out_reason("promo", Channel.EMAIL, marketing=True) == ""


def test_the_most_specific_entry_wins_whatever_the_order() -> None:
    entries = [
        pref("*", None, False),
        pref("*", Channel.EMAIL, True),
        pref("promo", None, False),
        pref("promo", Channel.EMAIL, True),
    ]
    for ordering in (entries, list(reversed(entries))):
        p = Preferences(tuple(ordering))
        # category + channel beats category
        assert p.opt_out_reason("promo", Channel.EMAIL, marketing=False) == ""
        # category beats channel
        assert "category 'promo'" in p.opt_out_reason("promo", Channel.SMS, marketing=False)
        # channel beats "*"
        assert p.opt_out_reason("news", Channel.EMAIL, marketing=False) == ""
        # "*" alone
        assert "every category on every channel" in p.opt_out_reason(
            "news", Channel.SMS, marketing=False
        )


def test_category_entry_beats_channel_entry_when_it_opts_in() -> None:
    p = Preferences((pref("*", Channel.SMS, False), pref("otp", None, True)))
    assert p.opt_out_reason("otp", Channel.SMS, marketing=False) == ""
    assert "on SMS" in p.opt_out_reason("news", Channel.SMS, marketing=False)


def test_marketing_opt_out_applies_to_marketing_only_and_beats_opt_ins() -> None:
    p = Preferences((pref("promo", Channel.EMAIL, True),)).unsubscribed_from_marketing()
    assert p.marketing_opt_out
    assert "marketing" in p.opt_out_reason("promo", Channel.EMAIL, marketing=True)
    assert p.opt_out_reason("promo", Channel.EMAIL, marketing=False) == ""


def test_unsubscribing_keeps_the_other_preferences() -> None:
    quiet = QuietHours.parse("22:00", "07:00")
    r = ada()
    r.set_preferences(Preferences((pref("news", None, False),), quiet_hours=quiet), T1)
    r.unsubscribe_from_marketing(T2)
    assert r.preferences.marketing_opt_out
    assert r.preferences.quiet_hours == quiet
    assert r.preferences.channels == (pref("news", None, False),)
    assert r.updated_at == T2
