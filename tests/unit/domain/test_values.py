"""Value objects and input rules: Address.parse, validate_new, RetryPolicy."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import ValidationFailed
from domain.notification import (
    Address,
    Channel,
    Content,
    NewNotification,
    RetryPolicy,
    validate_new,
)
from tests.unit.domain.notification_builders import new_notification

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def fields_of(error: ValidationFailed) -> list[str]:
    return [v.field for v in error.violations]


def parse_error(kind: str, value: str, field: str = "address") -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        Address.parse(kind, value, field)
    return info.value


# -- Address.parse -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("email", "user@example.com"),
        ("email", "first.last+tag@mail.example.co.uk"),
        ("email", "a@b.io"),
        ("email", "x" * 64 + "@example.com"),
        ("phone", "+14155550123"),
        ("phone", "+4930123456"),
        ("phone", "+1234567"),  # 7 digits: the shortest accepted
        ("phone", "+123456789012345"),  # 15 digits: the E.164 maximum
        ("device_token", "fcm:APA91bH-token_value"),
        ("device_token", "t" * 4096),
        ("webhook_url", "https://example.com/hooks/notify?x=1"),
        ("webhook_url", "http://localhost:8080/hook"),
        ("webhook_url", "https://[2001:db8::1]:8443/h"),
    ],
)
def test_parse_accepts_valid_addresses(kind: str, value: str) -> None:
    assert Address.parse(kind, value) == Address(kind, value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "no-at-sign",
        "@example.com",
        "user@",
        "user@localhost",  # no dot in the domain
        "user@-example.com",
        "user@example-.com",
        "user@example..com",
        "us er@example.com",
        "a@b@example.com",
        "x" * 65 + "@example.com",  # local part over 64
        "u@" + ".".join(["a" * 60] * 5) + ".com",  # over 254 in total
    ],
)
def test_parse_refuses_invalid_email(value: str) -> None:
    error = parse_error("email", value)
    assert fields_of(error) == ["address.email"]
    assert "not a valid email address" in error.violations[0].description
    # Validation errors are logged: the rejected value, personal data, is not repeated.
    assert repr(value) not in error.violations[0].description


@pytest.mark.parametrize(
    "value",
    [
        "",
        "14155550123",  # no +
        "+04155550123",  # country code cannot start with 0
        "+123456",  # 6 digits
        "+1234567890123456",  # 16 digits
        "+1 415 555 0123",
        "+1-415-555-0123",
        "+1415555012a",
    ],
)
def test_parse_refuses_non_e164_phone(value: str) -> None:
    error = parse_error("phone", value)
    assert fields_of(error) == ["address.phone"]
    assert "E.164" in error.violations[0].description
    assert repr(value) not in error.violations[0].description


@pytest.mark.parametrize(
    ("kind", "value"), [("email", "user@example.com\n"), ("phone", "+1415555012\n")]
)
def test_parse_refuses_a_trailing_newline(kind: str, value: str) -> None:
    parse_error(kind, value)


@pytest.mark.parametrize("value", ["", "   ", "\t\n", "t" * 4097])
def test_parse_refuses_blank_or_oversize_device_token(value: str) -> None:
    assert fields_of(parse_error("device_token", value)) == ["address.device_token"]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("ftp://example.com/hook", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("example.com/hook", "http:// or https://"),
        ("https:///no-host", "no host"),
        ("http://:8080/x", "no host"),
        ("https://user:secret@example.com/hook", "credentials"),
        ("https://user@example.com/hook", "credentials"),
        ("https://example.com:0/hook", "port 0"),
        ("https://example.com:99999/hook", "not a URL"),
        ("http://[::1/hook", "not a URL"),
        ("https://example.com/" + "a" * 2048, "longer than 2048"),
    ],
)
def test_parse_refuses_unusable_webhook_url(value: str, says: str) -> None:
    error = parse_error("webhook_url", value)
    assert fields_of(error) == ["address.webhook_url"]
    assert says in error.violations[0].description
    assert repr(value) not in error.violations[0].description


def test_webhook_url_of_exactly_the_limit_is_accepted() -> None:
    url = "https://example.com/"
    url += "a" * (2048 - len(url))
    assert Address.parse("webhook_url", url).value == url


def test_parse_names_the_field_it_was_given() -> None:
    error = parse_error("email", "nope", field="recipients[3].address")
    assert fields_of(error) == ["recipients[3].address.email"]


def test_parse_refuses_an_unknown_kind_on_the_address_field() -> None:
    error = parse_error("fax", "+14155550123")
    assert fields_of(error) == ["address"]
    assert "unknown address kind" in error.violations[0].description


@pytest.mark.parametrize(
    ("kind", "channel"),
    [
        ("email", Channel.EMAIL),
        ("phone", Channel.SMS),
        ("device_token", Channel.PUSH),
        ("webhook_url", Channel.WEBHOOK),
    ],
)
def test_each_address_kind_fits_exactly_one_channel(kind: str, channel: Channel) -> None:
    address = Address(kind, "x")
    assert [c for c in Channel if address.fits(c)] == [channel]


# -- validate_new --------------------------------------------------------------------------------

Change = Callable[[NewNotification], NewNotification]


def change(**kw: object) -> Change:
    return lambda n: dataclasses.replace(n, **kw)  # type: ignore[arg-type]


def email(**kw: object) -> NewNotification:
    return dataclasses.replace(new_notification(Channel.EMAIL), **kw)  # type: ignore[arg-type]


def violations(new: NewNotification, prefix: str = "") -> list[str]:
    v = validate_new(new, NOW, prefix)
    if not v:
        return []
    with pytest.raises(ValidationFailed) as info:
        v.raise_if_any()
    return fields_of(info.value)


@pytest.mark.parametrize("channel", list(Channel))
def test_a_complete_notification_has_no_violations(channel: Channel) -> None:
    assert violations(new_notification(channel)) == []


def test_limits_are_inclusive() -> None:
    new = email(
        request_id="r" * 128,
        user_id="u" * 256,
        category="c" * 128,
        content=Content("t" * 512, "b" * 65536),
        metadata={f"k{i}": "v" * 1024 for i in range(63)} | {"k" * 128: "v"},  # 64 entries
        expires_at=NOW + timedelta(seconds=1),
    )
    assert violations(new) == []


@pytest.mark.parametrize(
    ("new", "field"),
    [
        (email(request_id=""), "request_id"),
        (email(request_id="r" * 129), "request_id"),
        (email(user_id=""), "user_id"),
        (email(user_id="   "), "user_id"),
        (email(user_id="u" * 257), "user_id"),
        (email(category=""), "category"),
        (email(category=" "), "category"),
        (email(category="c" * 129), "category"),
        (email(content=Content("", "")), "content"),
        (email(content=Content("  ", "\n")), "content"),
        (email(content=Content("t" * 513, "body")), "content.title"),
        (email(content=Content("title", "b" * (64 * 1024 + 1))), "content.body"),
        (email(address=None), "address.email"),
        (email(address=Address("phone", "+14155550123")), "address"),
        (email(expires_at=NOW), "expires_at"),
        (email(expires_at=NOW - timedelta(days=1)), "expires_at"),
        (
            email(scheduled_at=NOW + timedelta(hours=2), expires_at=NOW + timedelta(hours=1)),
            "expires_at",
        ),
        (
            email(scheduled_at=NOW + timedelta(hours=1), expires_at=NOW + timedelta(hours=1)),
            "expires_at",
        ),
        (email(metadata={f"k{i}": "v" for i in range(65)}), "metadata"),
        (email(metadata={"big": "v" * 1025}), "metadata[big]"),
        (email(metadata={"": "v"}), "metadata[]"),
        (email(metadata={"k" * 129: "v"}), f"metadata[{'k' * 129}]"),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_each_rule_names_its_field(new: NewNotification, field: str) -> None:
    assert violations(new) == [field]


@pytest.mark.parametrize(
    ("channel", "field"),
    [
        (Channel.EMAIL, "address.email"),
        (Channel.SMS, "address.phone"),
        (Channel.PUSH, "address.device_token"),
        (Channel.WEBHOOK, "address.webhook_url"),
    ],
)
def test_missing_address_names_the_kind_the_channel_needs(channel: Channel, field: str) -> None:
    new = dataclasses.replace(new_notification(channel), address=None)
    assert violations(new) == [field]


def test_in_app_needs_no_address_and_refuses_one() -> None:
    assert violations(dataclasses.replace(new_notification(Channel.IN_APP), address=None)) == []
    with_address = dataclasses.replace(
        new_notification(Channel.IN_APP), address=Address("email", "user@example.com")
    )
    assert violations(with_address) == ["address"]


def test_webhook_with_an_email_address_is_a_mismatch() -> None:
    new = dataclasses.replace(
        new_notification(Channel.WEBHOOK), address=Address("email", "user@example.com")
    )
    assert violations(new) == ["address"]


def test_every_violation_is_reported_at_once() -> None:
    new = email(
        request_id="",
        user_id="",
        category="",
        content=Content("", ""),
        address=None,
        expires_at=NOW - timedelta(seconds=1),
    )
    assert violations(new) == [
        "request_id",
        "user_id",
        "category",
        "content",
        "address.email",
        "expires_at",
    ]


def test_prefix_is_put_in_front_of_every_field() -> None:
    new = email(user_id="", address=None)
    assert violations(new, "recipients[7].") == [
        "recipients[7].user_id",
        "recipients[7].address.email",
    ]


# -- RetryPolicy ---------------------------------------------------------------------------------

ONE = timedelta(seconds=1)


def delay(
    policy: RetryPolicy, attempts: int, draw: float = 1.0, retry_after: timedelta | None = None
) -> timedelta:
    return policy.next_attempt_at(NOW, attempts, lambda: draw, retry_after) - NOW


def test_backoff_doubles_per_attempt_until_the_cap() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=ONE, max_delay=timedelta(seconds=10))
    got = [delay(policy, n).total_seconds() for n in range(1, 7)]
    assert got == [1, 2, 4, 8, 10, 10]


def test_zero_attempts_uses_the_base_delay() -> None:
    assert delay(RetryPolicy(base_delay=timedelta(seconds=3)), 0) == timedelta(seconds=3)


def test_full_jitter_scales_the_cap_by_the_random_draw() -> None:
    policy = RetryPolicy(base_delay=ONE, max_delay=timedelta(minutes=10))
    assert delay(policy, 3, draw=0.25) == ONE  # cap 4s
    assert delay(policy, 3, draw=0.0) == timedelta(0)
    assert delay(policy, 3, draw=0.5) == 2 * ONE


def test_full_jitter_calls_random_once_per_decision() -> None:
    calls: list[int] = []

    def draw() -> float:
        calls.append(1)
        return 0.75

    at = RetryPolicy(base_delay=ONE).next_attempt_at(NOW, 2, draw)
    assert at == NOW + timedelta(seconds=1.5)
    assert len(calls) == 1


def test_retry_after_is_a_floor() -> None:
    policy = RetryPolicy(base_delay=ONE, max_delay=timedelta(minutes=10))
    # Jitter alone would give 0.4s; the provider asked for 30s.
    assert delay(policy, 3, draw=0.1, retry_after=timedelta(seconds=30)) == timedelta(seconds=30)
    # A Retry-After shorter than the jittered delay does not shorten it.
    assert delay(policy, 3, draw=1.0, retry_after=timedelta(seconds=1)) == timedelta(seconds=4)


def test_retry_after_is_bounded_by_max_delay() -> None:
    policy = RetryPolicy(base_delay=ONE, max_delay=timedelta(minutes=10))
    assert delay(policy, 1, draw=0.0, retry_after=timedelta(days=3)) == timedelta(minutes=10)


def test_backoff_stays_capped_for_many_attempts() -> None:
    policy = RetryPolicy(max_attempts=100, base_delay=ONE, max_delay=timedelta(minutes=10))
    assert delay(policy, 60) == timedelta(minutes=10)


def test_allows_another_until_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [policy.allows_another(n) for n in range(5)] == [True, True, True, False, False]


def test_max_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    assert RetryPolicy(max_attempts=1).allows_another(0)


def test_max_attempts_can_be_set_per_channel() -> None:
    from infrastructure.config import ConfigError, Settings

    settings = Settings.from_env({"NOTIFYD_MAX_ATTEMPTS": "4", "NOTIFYD_MAX_ATTEMPTS_WEBHOOK": "9"})
    assert settings.attempts_for("WEBHOOK") == 9
    assert settings.attempts_for("EMAIL") == 4
    with pytest.raises(ConfigError, match="NOTIFYD_MAX_ATTEMPTS_SMS"):
        Settings.from_env({"NOTIFYD_MAX_ATTEMPTS_SMS": "0"})
    with pytest.raises(ConfigError, match="NOTIFYD_MAX_ATTEMPTS_PUSH"):
        Settings.from_env({"NOTIFYD_MAX_ATTEMPTS_PUSH": "many"})


def test_a_contents_digest_follows_its_values_not_a_copy_it_was_made_from() -> None:
    content = Content("Shipped", "Your order shipped", data={"order": 42})
    first = content.digest()

    assert content == Content("Shipped", "Your order shipped", data={"order": 42})
    assert Content("Shipped", "Your order shipped", data={"order": 42}).digest() == first
    changed = dataclasses.replace(content, body="Your order was delivered")
    assert changed.digest() != first
    assert (
        changed.digest()
        == Content("Shipped", "Your order was delivered", data={"order": 42}).digest()
    )
