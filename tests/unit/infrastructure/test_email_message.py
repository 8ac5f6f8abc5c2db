"""The email a notification becomes, and reading an SMTP relay URL: no I/O."""

from __future__ import annotations

import email.policy
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage

import pytest

from domain.notification import Address, Channel, Content, NewNotification, Notification, Priority
from infrastructure.senders.email import (
    InvalidMailAddress,
    SmtpProvider,
    SmtpSecurity,
    build_message,
    header_text,
    message_id,
)
from infrastructure.senders.email.mime import envelope_sender, mailbox, smtp_payload

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
ID = "01964b2e-0000-7000-8000-0000000000aa"


def notification(title: str = "Hi", body: str = "Body", html: str = "") -> Notification:
    return Notification.accept(
        NewNotification(
            request_id="req-1",
            user_id="user-1",
            channel=Channel.EMAIL,
            priority=Priority.MEDIUM,
            category="welcome",
            content=Content(title=title, body=body, html=html),
            address=Address.parse("email", "ada@example.com"),
        ),
        id=ID,
        tenant_id="t",
        caller="c",
        fingerprint="f",
        now=NOW,
    )


def wire(message: EmailMessage) -> EmailMessage:
    parsed = message_from_bytes(
        message.as_bytes().replace(b"\r\n", b"\n"), _class=EmailMessage, policy=email.policy.default
    )
    assert isinstance(parsed, EmailMessage)
    return parsed


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("plain", "plain"),
        ("a\r\nBcc: x@evil.test", "a Bcc: x@evil.test"),
        ("a\nb\rc", "a b c"),
        ("a\u2028b\x85c\x0bd", "a b c d"),
        ("nul\x00 and tab\tkept", "nul  and tab\tkept"),
        ("\r\n trailing \n", "trailing"),
    ],
)
def test_header_text_is_one_line(raw: str, clean: str) -> None:
    assert header_text(raw) == clean


@pytest.mark.parametrize(
    "bad",
    ["a,b@example.com", "ada@example.com\r\nBcc: x@evil.test", "jörg@example.com", "nobody"],
)
def test_mailbox_refuses_anything_but_one_plain_address(bad: str) -> None:
    with pytest.raises(InvalidMailAddress):
        mailbox(bad)


def test_envelope_sender_is_the_address_of_a_display_name_form() -> None:
    assert envelope_sender("Notifyd <noreply@notifyd.test>") == "noreply@notifyd.test"
    assert envelope_sender("noreply@notifyd.test") == "noreply@notifyd.test"
    with pytest.raises(InvalidMailAddress):
        envelope_sender("Notifyd")
    with pytest.raises(InvalidMailAddress):
        envelope_sender("a@b.test\r\nBcc: x@evil.test")


def test_text_only_message() -> None:
    message = wire(
        build_message(notification(), from_address="N <n@x.test>", to="ada@example.com", now=NOW)
    )

    assert message.get_content_type() == "text/plain"
    assert message["Subject"] == "Hi"
    assert message["To"] == "ada@example.com"
    assert message["Date"].datetime == NOW
    assert message["Message-ID"] == f"<{ID}@notifyd>" == message_id(ID)
    assert message.get_content() == "Body\n"


def test_html_is_the_second_alternative() -> None:
    built = build_message(
        notification(html="<p>Body</p>"), from_address="n@x.test", to="ada@example.com"
    )
    message = wire(built)

    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]


def test_blank_html_adds_no_alternative() -> None:
    built = build_message(notification(html="  \n"), from_address="n@x.test", to="ada@example.com")

    assert built.get_content_type() == "text/plain"


def test_retries_carry_the_same_message_id() -> None:
    first = build_message(notification(), from_address="n@x.test", to="ada@example.com")
    again = build_message(notification(), from_address="n@x.test", to="ada@example.com")

    assert first["Message-ID"] == again["Message-ID"]


def test_payload_is_dot_stuffed_crlf_and_terminated() -> None:
    built = build_message(
        notification(body=".starts with a dot\n..two\nmiddle . dot"),
        from_address="n@x.test",
        to="ada@example.com",
    )

    payload = smtp_payload(built)

    assert payload.endswith(b"\r\n.\r\n")
    assert b"\r\n..starts with a dot\r\n...two\r\nmiddle . dot\r\n" in payload
    assert b"\n" not in payload.replace(b"\r\n", b"")


def test_from_url_reads_credentials_port_and_security() -> None:
    provider = SmtpProvider.from_url(
        "smtp-2", "smtp://user%40corp:p%3Ass%2F@relay.test:2525", from_address="n@x.test"
    )

    assert (provider.name, provider.host, provider.port) == ("smtp-2", "relay.test", 2525)
    assert provider.security is SmtpSecurity.PLAIN
    assert (provider._username, provider._password) == ("user@corp", "p:ss/")


@pytest.mark.parametrize(
    ("url", "starttls", "port", "security"),
    [
        ("smtp://relay.test", False, 25, SmtpSecurity.PLAIN),
        ("smtp://relay.test", True, 587, SmtpSecurity.STARTTLS),
        ("smtps://relay.test", False, 465, SmtpSecurity.TLS),
        # Implicit TLS already encrypts; the STARTTLS setting does not apply to it.
        ("smtps://relay.test", True, 465, SmtpSecurity.TLS),
    ],
)
def test_from_url_defaults(url: str, starttls: bool, port: int, security: SmtpSecurity) -> None:
    provider = SmtpProvider.from_url("smtp", url, starttls=starttls, from_address="n@x.test")

    assert (provider.port, provider.security) == (port, security)
    assert provider._username is None


def test_from_url_refuses_other_schemes_without_echoing_the_password() -> None:
    with pytest.raises(ValueError, match="smtp") as caught:
        SmtpProvider.from_url("smtp", "http://u:secret@relay.test", from_address="n@x.test")

    assert "secret" not in str(caught.value)


def test_a_from_address_without_an_address_is_refused() -> None:
    with pytest.raises(InvalidMailAddress):
        SmtpProvider(host="relay.test", port=25, from_address="Notifyd")
