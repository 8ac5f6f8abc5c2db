"""SmtpProvider against the aiosmtpd sandbox relay on loopback: what the relay receives, and how
each of its answers (or silences) is classified."""

from __future__ import annotations

import asyncio
import dataclasses
import email.policy
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path

import pytest

from application.ports.sender import DeliveryFailed
from domain.notification import (
    Address,
    Channel,
    Content,
    ErrorClass,
    NewNotification,
    Notification,
    Priority,
)
from infrastructure.sandbox.http import SandboxTls
from infrastructure.sandbox.journal import read_journals
from infrastructure.sandbox.smtp import SandboxSmtp
from infrastructure.senders.email import SmtpProvider, SmtpSecurity

pytestmark = pytest.mark.integration

FROM = "Notifyd <noreply@notifyd.test>"
TO = "ada@example.com"
USER, PASSWORD = "relay-user@notifyd.test", "p@ss:w/rd %"
CREATED_AT = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)

MakeProvider = Callable[..., SmtpProvider]


def make_notification(
    id: str = "01964b2e-0000-7000-8000-000000000001",
    *,
    title: str = "Your order shipped",
    body: str = "It is on its way.\n.A line that starts with a dot.",
    html: str = "",
) -> Notification:
    return Notification.accept(
        NewNotification(
            request_id=f"req-{id}",
            user_id="user-7",
            channel=Channel.EMAIL,
            priority=Priority.HIGH,
            category="order_shipped",
            content=Content(title=title, body=body, html=html),
            address=Address.parse("email", TO),
        ),
        id=id,
        tenant_id="tenant-a",
        caller="svc-orders",
        fingerprint="x",
        now=CREATED_AT,
    )


def parse(raw: bytes) -> EmailMessage:
    # As received: CRLF line ends, which the parser would keep inside the parts' text.
    message = message_from_bytes(
        raw.replace(b"\r\n", b"\n"), _class=EmailMessage, policy=email.policy.default
    )
    assert isinstance(message, EmailMessage)
    return message


async def failure(provider: SmtpProvider, notification: Notification) -> DeliveryFailed:
    with pytest.raises(DeliveryFailed) as caught:
        await provider.send(notification)
    assert caught.value.provider == provider.name
    return caught.value


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SandboxTls:
    return SandboxTls.create(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
async def peer(tmp_path: Path) -> AsyncIterator[SandboxSmtp]:
    async with SandboxSmtp(directory=tmp_path / "sandbox") as server:
        yield server


@pytest.fixture
async def providers() -> AsyncIterator[list[SmtpProvider]]:
    """Providers made in a test, closed after it."""
    made: list[SmtpProvider] = []
    yield made
    for provider in made:
        await provider.close()


@pytest.fixture
def provider_for(providers: list[SmtpProvider]) -> MakeProvider:
    def make(peer: SandboxSmtp, **kwargs: object) -> SmtpProvider:
        options: dict[str, object] = {
            "host": peer.host,
            "port": peer.port,
            "from_address": FROM,
            "timeout": 2.0,
            "local_hostname": "worker.notifyd.test",
        }
        options.update(kwargs)
        provider = SmtpProvider("smtp", **options)  # type: ignore[arg-type]
        providers.append(provider)
        return provider

    return make


# -- what the relay receives ------------------------------------------------------------------


async def test_plain_text_message_carries_the_headers_and_the_body(
    peer: SandboxSmtp, provider_for: MakeProvider, tmp_path: Path
) -> None:
    notification = make_notification()

    result = await provider_for(peer).send(notification)

    [entry] = peer.journal.entries
    assert result.provider == "smtp"
    assert result.provider_message_id == entry["queue_id"]
    assert entry["from"] == "noreply@notifyd.test"
    assert entry["to"] == [TO]
    assert entry["message_id"] == f"<{notification.id}@notifyd>"
    assert entry["subject"] == "Your order shipped"
    assert entry["html"] == ""
    [raw] = peer.received
    message = parse(raw)
    assert message["From"] == FROM
    assert message["To"] == TO
    assert message["Subject"] == "Your order shipped"
    assert message["Message-ID"] == f"<{notification.id}@notifyd>"
    assert message["Date"].datetime.tzinfo is not None
    assert message.get_content_type() == "text/plain"
    # Dot-stuffing undone by the relay: the line that began with a dot arrives intact.
    assert message.get_content() == "It is on its way.\n.A line that starts with a dot.\n"
    assert entry["text"] == message.get_content()
    # The JSONL file `notifyd sandbox` reads has it too.
    assert read_journals(tmp_path / "sandbox") == {"smtp": peer.journal.entries}


async def test_html_goes_as_an_alternative_after_the_plain_text(
    peer: SandboxSmtp, provider_for: MakeProvider
) -> None:
    notification = make_notification(
        title="Grüße — order 42", body="Plain: café", html="<p>HTML: <b>café</b></p>"
    )

    await provider_for(peer).send(notification)

    message = parse(peer.received[0])
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content() == "Plain: café\n"
    assert parts[1].get_content() == "<p>HTML: <b>café</b></p>\n"
    # Non-ASCII goes out 7-bit clean: encoded words in headers, QP or base64 in the parts.
    assert peer.received[0].isascii()
    assert message["Subject"] == "Grüße — order 42"
    [entry] = peer.journal.entries
    assert entry["text"] == "Plain: café\n"
    assert entry["html"] == "<p>HTML: <b>café</b></p>\n"


async def test_a_title_with_line_breaks_cannot_add_headers(
    peer: SandboxSmtp, provider_for: MakeProvider
) -> None:
    notification = make_notification(
        title="Hello\r\nBcc: victim@evil.test\r\nX-Injected: yes\nSubject: other"
    )

    await provider_for(peer).send(notification)

    message = parse(peer.received[0])
    assert message["Bcc"] is None
    assert message["X-Injected"] is None
    assert message.get_all("Subject") == [
        "Hello Bcc: victim@evil.test X-Injected: yes Subject: other"
    ]
    assert peer.journal.entries[0]["to"] == [TO]


# -- TLS and authentication -------------------------------------------------------------------


async def test_starttls_and_auth_from_a_url(tls: SandboxTls, providers: list[SmtpProvider]) -> None:
    async with SandboxSmtp(username=USER, password=PASSWORD, tls=tls) as peer:
        assert peer.url.startswith("smtp://relay-user%40notifyd.test:p%40ss%3Aw%2Frd%20%25@")
        provider = SmtpProvider.from_url(
            "smtp",
            peer.url,
            starttls=True,
            from_address=FROM,
            timeout=2.0,
            ca_file=str(tls.ca_file),
            pool_size=1,
        )
        providers.append(provider)
        assert provider.security is SmtpSecurity.STARTTLS

        await provider.send(make_notification())

        # The relay requires STARTTLS before AUTH and MAIL: taking the message proves both.
        assert len(peer.journal.entries) == 1


async def test_implicit_tls_and_auth(tls: SandboxTls, providers: list[SmtpProvider]) -> None:
    async with SandboxSmtp(username=USER, password=PASSWORD, tls=tls, implicit_tls=True) as peer:
        provider = SmtpProvider.from_url(
            "smtp", peer.url, from_address=FROM, timeout=2.0, ca_file=str(tls.ca_file)
        )
        providers.append(provider)
        assert provider.security is SmtpSecurity.TLS

        await provider.send(make_notification())

        assert len(peer.journal.entries) == 1


async def test_without_starttls_the_relay_offers_no_auth_and_the_provider_is_down(
    tls: SandboxTls, provider_for: MakeProvider
) -> None:
    async with SandboxSmtp(username=USER, password=PASSWORD, tls=tls) as peer:
        failed = await failure(
            provider_for(peer, username=USER, password=PASSWORD), make_notification()
        )

    assert failed.error_class is ErrorClass.PROVIDER_DOWN
    assert not peer.journal.entries


async def test_an_untrusted_certificate_is_provider_down(
    tls: SandboxTls, provider_for: MakeProvider
) -> None:
    async with SandboxSmtp(username=USER, password=PASSWORD, tls=tls) as peer:
        failed = await failure(
            provider_for(peer, username=USER, password=PASSWORD, security=SmtpSecurity.STARTTLS),
            make_notification(),
        )

    assert failed.error_class is ErrorClass.PROVIDER_DOWN
    assert "certificate" in failed.message.lower()


async def test_bad_credentials_are_provider_down(
    tls: SandboxTls, provider_for: MakeProvider
) -> None:
    async with SandboxSmtp(username=USER, password=PASSWORD, tls=tls) as peer:
        failed = await failure(
            provider_for(
                peer,
                username=USER,
                password="wrong",
                security=SmtpSecurity.STARTTLS,
                ca_file=str(tls.ca_file),
            ),
            make_notification(),
        )

    assert failed.error_class is ErrorClass.PROVIDER_DOWN
    assert "535" in failed.message
    assert not peer.journal.entries


# -- refusals ---------------------------------------------------------------------------------


async def test_a_4xx_is_transient_and_the_connection_stays_usable(
    peer: SandboxSmtp, provider_for: MakeProvider
) -> None:
    provider = provider_for(peer)
    peer.fail_next(451, "4.3.0 Mail server temporarily rejected message", at="DATA")

    failed = await failure(provider, make_notification())
    await provider.send(make_notification())

    assert failed.error_class is ErrorClass.TRANSIENT
    assert "451" in failed.message
    assert len(peer.journal.entries) == 1
    # After RSET the same connection carried the next message.
    assert peer.connections == 1


async def test_a_5xx_at_rcpt_is_permanent(peer: SandboxSmtp, provider_for: MakeProvider) -> None:
    peer.fail_next(
        550, "5.1.1 <ada@example.com>: Recipient address rejected: User unknown", at="RCPT"
    )

    failed = await failure(provider_for(peer), make_notification())

    assert failed.error_class is ErrorClass.PERMANENT
    assert "5.1.1" in failed.message
    assert "RCPT TO" in failed.message
    assert not peer.journal.entries


async def test_a_5xx_at_the_end_of_data_is_permanent(
    peer: SandboxSmtp, provider_for: MakeProvider
) -> None:
    peer.fail_next(554, "5.7.1 Message rejected as spam", at="DATA")

    failed = await failure(provider_for(peer), make_notification())

    assert failed.error_class is ErrorClass.PERMANENT
    assert "554" in failed.message
    assert not peer.journal.entries


async def test_a_421_on_a_new_connection_is_provider_down(
    peer: SandboxSmtp, provider_for: MakeProvider
) -> None:
    peer.fail_next(421, "4.3.2 Service shutting down", at="MAIL")

    failed = await failure(provider_for(peer), make_notification())

    assert failed.error_class is ErrorClass.PROVIDER_DOWN
    assert not peer.journal.entries


async def test_a_notification_without_an_email_address_is_permanent(
    peer: SandboxSmtp, provider_for: MakeProvider
) -> None:
    notification = dataclasses.replace(
        make_notification(), address=Address("phone", "+14155550123")
    )

    failed = await failure(provider_for(peer), notification)

    assert failed.error_class is ErrorClass.PERMANENT
    assert peer.connections == 0


# -- silences and lost connections ------------------------------------------------------------


async def test_a_drop_after_data_is_maybe_accepted_and_the_retry_is_journalled_once(
    peer: SandboxSmtp, provider_for: MakeProvider
) -> None:
    provider = provider_for(peer)
    notification = make_notification()
    peer.drop_next()

    failed = await failure(provider, notification)
    result = await provider.send(notification)

    assert failed.error_class is ErrorClass.MAYBE_ACCEPTED
    [entry] = peer.journal.entries
    assert peer.repeats[f"<{notification.id}@notifyd>"] == 1
    assert [parse(raw)["Message-ID"] for raw in peer.received] == [entry["message_id"]] * 2
    # The relay names the queue entry the first attempt made.
    assert result.provider_message_id == entry["queue_id"]


async def test_silence_past_the_timeout_after_data_is_maybe_accepted(
    peer: SandboxSmtp, provider_for: MakeProvider
) -> None:
    provider = provider_for(peer, timeout=0.3)
    notification = make_notification()
    peer.hang_next(5.0)

    failed = await failure(provider, notification)
    await provider.send(notification)

    assert failed.error_class is ErrorClass.MAYBE_ACCEPTED
    assert len(peer.journal.entries) == 1
    assert len(peer.received) == 2
    # The silent connection was dropped, not reused.
    assert peer.connections == 2


async def test_a_closed_port_is_provider_down(
    provider_for: MakeProvider, peer: SandboxSmtp
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    failed = await failure(provider_for(peer, port=closed_port), make_notification())

    assert failed.error_class is ErrorClass.PROVIDER_DOWN
    assert f"127.0.0.1:{closed_port}" in failed.message


async def test_a_relay_that_never_greets_is_provider_down(
    provider_for: MakeProvider, peer: SandboxSmtp
) -> None:
    accepted: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
    try:
        port = silent.sockets[0].getsockname()[1]
        failed = await failure(provider_for(peer, port=port, timeout=0.3), make_notification())
    finally:
        silent.close()
        for writer in accepted:
            writer.close()

    assert failed.error_class is ErrorClass.PROVIDER_DOWN
    assert "connect" in failed.message
    assert accepted, "the provider did reach the silent server"


# -- connection reuse -------------------------------------------------------------------------


async def test_several_sends_share_one_connection(
    peer: SandboxSmtp, provider_for: MakeProvider
) -> None:
    provider = provider_for(peer)

    for i in range(3):
        await provider.send(make_notification(f"01964b2e-0000-7000-8000-00000000001{i}"))

    assert len(peer.journal.entries) == 3
    assert peer.connections == 1
    assert provider.connections_opened == 1


async def test_concurrent_sends_open_at_most_pool_size_connections(
    peer: SandboxSmtp, provider_for: MakeProvider
) -> None:
    provider = provider_for(peer, pool_size=2)

    await asyncio.gather(
        *(
            provider.send(make_notification(f"01964b2e-0000-7000-8000-00000000002{i}"))
            for i in range(6)
        )
    )

    assert len(peer.journal.entries) == 6
    assert peer.connections <= 2


async def test_a_connection_the_relay_closed_while_idle_is_replaced(
    peer: SandboxSmtp, provider_for: MakeProvider
) -> None:
    provider = provider_for(peer)
    await provider.send(make_notification("01964b2e-0000-7000-8000-000000000031"))

    await peer.disconnect_all()
    await provider.send(make_notification("01964b2e-0000-7000-8000-000000000032"))

    assert len(peer.journal.entries) == 2
    assert peer.connections == 2


async def test_a_kept_connection_refused_with_421_is_replaced_before_the_message_goes(
    peer: SandboxSmtp, provider_for: MakeProvider
) -> None:
    # The relay closes the connection only when the next transaction starts: the provider
    # learns it on MAIL FROM, with nothing of the message sent, and starts over on a new one.
    provider = provider_for(peer)
    await provider.send(make_notification("01964b2e-0000-7000-8000-000000000041"))
    peer.fail_next(421, "4.7.0 Too many messages on this connection", at="MAIL")

    await provider.send(make_notification("01964b2e-0000-7000-8000-000000000042"))

    assert len(peer.journal.entries) == 2
    assert peer.connections == 2
    assert provider.connections_opened == 2
