"""The EMAIL channel over SMTP: one relay, a few kept-open authenticated connections, and every
reply read as the failover and retry rules need it."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import re
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPDataError,
    SMTPException,
    SMTPResponse,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPStatus,
    SMTPTimeoutError,
)

from application.ports.sender import DeliveryFailed
from domain.notification import Channel, DeliveryResult, ErrorClass, Notification
from infrastructure.senders.email.mime import (
    InvalidMailAddress,
    build_message,
    envelope_sender,
    message_id,
    smtp_payload,
)

# "250 2.0.0 Ok: queued as 4F2D81C0A2" (Postfix and most relays that name their queue entry).
_QUEUED_AS = re.compile(r"queued as\s+<?([^\s<>]+)", re.IGNORECASE)
# 421: the relay is shutting the channel (overloaded, going down, too many connections). 530:
# it wants authentication we did not give. Neither says anything about this message or its
# recipient, so the next relay may well take it at once.
_RELAY_UNAVAILABLE = frozenset({SMTPStatus.domain_unavailable, SMTPStatus.access_denied})
_QUIT_TIMEOUT_SECONDS = 1.0
_WAITING_FOR_SLOT = "waiting for a free connection"


class SmtpSecurity(enum.StrEnum):
    PLAIN = "plain"
    STARTTLS = "starttls"
    # TLS from the first byte (smtps, port 465).
    TLS = "tls"


@dataclass(frozen=True, slots=True)
class _Envelope:
    sender: str
    recipient: str
    message_id: str
    payload: bytes


@dataclass(slots=True)
class _Progress:
    """How far one send got, so a failure can say whether the relay may have the message."""

    stage: str = _WAITING_FOR_SLOT
    # The DATA content left us: from here on, silence may hide an acceptance.
    content_sent: bool = False
    # The relay's refusal, decided before tidying the connection up: the deadline running out
    # during that RSET does not change what the relay said.
    verdict: DeliveryFailed | None = None


class _StaleConnection(Exception):
    """A kept-open connection turned out closed before any of this message was sent."""


class SmtpProvider:
    """Sends through one SMTP relay. Up to ``pool_size`` connections are open at once and kept
    open between sends (logged in, past STARTTLS); a kept connection the relay has closed is
    replaced before the message goes out."""

    channel = Channel.EMAIL

    def __init__(
        self,
        name: str = "smtp",
        *,
        host: str,
        port: int,
        from_address: str,
        username: str | None = None,
        password: str | None = None,
        security: SmtpSecurity = SmtpSecurity.PLAIN,
        timeout: float = 10.0,
        ca_file: str | None = None,
        pool_size: int = 4,
        local_hostname: str | None = None,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.name = name
        self.host = host
        self.port = port
        self.security = security
        self._sender = envelope_sender(from_address)
        self._from = from_address
        self._username = username
        self._password = password
        self._timeout = timeout
        self._local_hostname = local_hostname
        self._tls_context: ssl.SSLContext | None = None
        if ca_file:
            # Trusted in addition to the system's CAs (a private relay, a sandbox peer).
            self._tls_context = ssl.create_default_context()
            self._tls_context.load_verify_locations(cafile=ca_file)
        self._pool_size = pool_size
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[aiosmtplib.SMTP] = []
        self._closed = False
        # Connections opened over the provider's life (for tests and diagnostics).
        self.connections_opened = 0

    @classmethod
    def from_url(
        cls,
        name: str,
        url: str,
        *,
        from_address: str,
        starttls: bool = False,
        timeout: float = 10.0,
        ca_file: str | None = None,
        pool_size: int = 4,
    ) -> SmtpProvider:
        """``smtp://[user:password@]host[:port]`` (STARTTLS when ``starttls``; port 587 then,
        else 25) or ``smtps://...`` (TLS from the first byte; port 465). Credentials are
        percent-decoded."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(f"not an smtp:// or smtps:// URL with a host: {_redacted(url)}")
        if scheme == "smtps":
            security, default_port = SmtpSecurity.TLS, 465
        elif starttls:
            security, default_port = SmtpSecurity.STARTTLS, 587
        else:
            security, default_port = SmtpSecurity.PLAIN, 25
        return cls(
            name,
            host=parts.hostname,
            port=parts.port or default_port,
            from_address=from_address,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            security=security,
            timeout=timeout,
            ca_file=ca_file or None,
            pool_size=pool_size,
        )

    @property
    def origin(self) -> str:
        return f"{self.host}:{self.port}"

    async def send(self, notification: Notification) -> DeliveryResult:
        envelope = self._envelope(notification)
        progress = _Progress()
        try:
            # One deadline over waiting for a connection, connecting and the whole transaction,
            # so a relay that answers slowly at every step cannot hold the worker past it.
            async with asyncio.timeout(self._timeout):
                async with self._slots:
                    reply = await self._deliver(envelope, progress)
        except TimeoutError as exc:
            raise (progress.verdict or self._timed_out(progress)) from exc
        queued = _QUEUED_AS.search(reply.message)
        return DeliveryResult(
            provider=self.name,
            provider_message_id=queued.group(1) if queued else envelope.message_id,
        )

    async def close(self) -> None:
        """Says goodbye on every idle connection; connections in use close when released."""
        self._closed = True
        idle, self._idle = self._idle, []
        for smtp in idle:
            with contextlib.suppress(SMTPException, OSError):
                await smtp.quit(timeout=_QUIT_TIMEOUT_SECONDS)
            smtp.close()

    # -- one delivery -----------------------------------------------------------------------------

    def _envelope(self, notification: Notification) -> _Envelope:
        address = notification.address
        if address is None or address.kind != "email":
            raise self._failed(ErrorClass.PERMANENT, "the notification has no email address")
        try:
            message = build_message(notification, from_address=self._from, to=address.value)
        except InvalidMailAddress as exc:
            raise self._failed(ErrorClass.PERMANENT, str(exc)) from exc
        return _Envelope(
            sender=self._sender,
            recipient=address.value,
            message_id=message_id(notification.id),
            payload=smtp_payload(message),
        )

    async def _deliver(self, envelope: _Envelope, progress: _Progress) -> SMTPResponse:
        smtp, reused = await self._checkout(progress)
        try:
            return await self._transact(smtp, envelope, progress, reused=reused)
        except _StaleConnection:
            # Relays close idle connections (timeouts, connection limits) and we may only find
            # out on the next command. Nothing of the message went out, so a new connection
            # cannot cause a duplicate.
            smtp = await self._connect(progress)
            return await self._transact(smtp, envelope, progress, reused=False)

    async def _transact(
        self, smtp: aiosmtplib.SMTP, envelope: _Envelope, progress: _Progress, *, reused: bool
    ) -> SMTPResponse:
        """MAIL, RCPT, DATA on ``smtp``, which goes back to the pool when it is still in a
        known state and is closed otherwise."""
        healthy = False
        try:
            progress.stage = "MAIL FROM"
            await smtp.mail(envelope.sender)
            progress.stage = "RCPT TO"
            await smtp.rcpt(envelope.recipient)
            progress.stage = "DATA"
            reply = await self._data(smtp, envelope.payload, progress)
            healthy = True
            return reply
        except SMTPResponseException as exc:
            if exc.code == SMTPStatus.domain_unavailable and reused and not progress.content_sent:
                raise _StaleConnection from exc
            progress.verdict = self._refused(exc, progress)
            healthy = await self._reset(smtp)
            raise progress.verdict from exc
        except SMTPServerDisconnected as exc:
            if reused and not progress.content_sent:
                raise _StaleConnection from exc
            raise self._lost(exc, progress) from exc
        except (SMTPException, OSError) as exc:
            raise self._lost(exc, progress) from exc
        finally:
            if healthy:
                self._checkin(smtp)
            else:
                smtp.close()

    async def _data(
        self, smtp: aiosmtplib.SMTP, payload: bytes, progress: _Progress
    ) -> SMTPResponse:
        """DATA, done step by step (aiosmtplib's ``data`` does not say whether the content had
        left when the connection failed, and that decides between "certainly not accepted" and
        "maybe accepted")."""
        start = await smtp.execute_command(b"DATA")
        if start.code != SMTPStatus.start_input:
            raise SMTPDataError(start.code, start.message)
        protocol = smtp.protocol
        if protocol is None:
            raise SMTPServerDisconnected("Connection lost")
        # We own the connection (one send at a time), so the client's command lock is not needed;
        # nothing awaits between the write and arming the reply reader.
        protocol.write(payload)
        progress.content_sent = True
        progress.stage = "end of DATA"
        try:
            reply = await protocol.read_response(timeout=self._timeout)
        except (SMTPServerDisconnected, SMTPTimeoutError):
            smtp.close()
            raise
        if reply.code != SMTPStatus.completed:
            raise SMTPDataError(reply.code, reply.message)
        return reply

    async def _reset(self, smtp: aiosmtplib.SMTP) -> bool:
        """RSET after a refusal, so the connection can carry the next message; False when it
        cannot be trusted any more."""
        if not smtp.is_connected:
            return False
        try:
            return (await smtp.rset()).code == SMTPStatus.completed
        except (SMTPException, OSError):
            return False

    # -- the pool ---------------------------------------------------------------------------------

    async def _checkout(self, progress: _Progress) -> tuple[aiosmtplib.SMTP, bool]:
        while self._idle:
            smtp = self._idle.pop()
            if smtp.is_connected:
                return smtp, True
            smtp.close()
        return await self._connect(progress), False

    def _checkin(self, smtp: aiosmtplib.SMTP) -> None:
        if self._closed or not smtp.is_connected or len(self._idle) >= self._pool_size:
            smtp.close()
        else:
            self._idle.append(smtp)

    async def _connect(self, progress: _Progress) -> aiosmtplib.SMTP:
        progress.stage = "connect"
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self._username,
            password=self._password,
            use_tls=self.security is SmtpSecurity.TLS,
            # Explicit either way: left unset, aiosmtplib upgrades whenever the relay offers it.
            start_tls=self.security is SmtpSecurity.STARTTLS,
            tls_context=self._tls_context,
            timeout=self._timeout,
            local_hostname=self._local_hostname,
        )
        # Everything up to a logged-in session either works or leaves the relay without any of
        # the message: PROVIDER_DOWN, whatever the cause (refused, timed out, TLS, AUTH), so
        # the next relay is tried at once.
        try:
            await smtp.connect()
        except SMTPAuthenticationError as exc:
            smtp.close()
            raise self._failed(
                ErrorClass.PROVIDER_DOWN,
                f"{self.origin} refused our credentials: {exc.code} {exc.message}",
            ) from exc
        except (SMTPException, OSError) as exc:
            smtp.close()
            raise self._failed(
                ErrorClass.PROVIDER_DOWN, f"cannot connect to {self.origin}: {_describe(exc)}"
            ) from exc
        self.connections_opened += 1
        return smtp

    # -- what a failure means ---------------------------------------------------------------------

    def _refused(self, exc: SMTPResponseException, progress: _Progress) -> DeliveryFailed:
        """The relay answered, and not with 250."""
        detail = f"{progress.stage}: {exc.code} {exc.message}".strip()
        if exc.code in _RELAY_UNAVAILABLE:
            return self._failed(ErrorClass.PROVIDER_DOWN, detail)
        if 400 <= exc.code < 500:
            return self._failed(ErrorClass.TRANSIENT, detail)
        if 500 <= exc.code < 600:
            # A 5xx at MAIL, RCPT (5.1.1 user unknown...) or the end of DATA: this message
            # will never pass here, and a relay is not the place to try another.
            return self._failed(ErrorClass.PERMANENT, detail)
        # An unreadable or out-of-sequence reply.
        return self._lost(exc, progress)

    def _lost(self, exc: Exception, progress: _Progress) -> DeliveryFailed:
        """The connection failed or fell silent mid-transaction."""
        if progress.content_sent:
            # The relay may have queued it and lost only its reply: retry here, same Message-ID.
            return self._failed(
                ErrorClass.MAYBE_ACCEPTED,
                f"no reply from {self.origin} after the message was sent: {_describe(exc)}",
            )
        # Dropped before the content was complete: the relay cannot have accepted anything,
        # so this is PROVIDER_DOWN (the next relay at once, and the breaker counts a relay
        # that drops sessions) rather than TRANSIENT (a backoff on the same relay).
        return self._failed(
            ErrorClass.PROVIDER_DOWN,
            f"{self.origin} dropped the session at {progress.stage}: {_describe(exc)}",
        )

    def _timed_out(self, progress: _Progress) -> DeliveryFailed:
        if progress.content_sent:
            return self._failed(
                ErrorClass.MAYBE_ACCEPTED,
                f"no reply from {self.origin} within {self._timeout}s after the message was sent",
            )
        if progress.stage == _WAITING_FOR_SLOT:
            # Our own pool is busy; the relay is not at fault, so no failover and no breaker.
            return self._failed(
                ErrorClass.TRANSIENT,
                f"all {self._pool_size} connections to {self.origin} stayed busy for "
                f"{self._timeout}s",
            )
        return self._failed(
            ErrorClass.PROVIDER_DOWN,
            f"no answer from {self.origin} within {self._timeout}s at {progress.stage}",
        )

    def _failed(self, error_class: ErrorClass, message: str) -> DeliveryFailed:
        return DeliveryFailed(error_class, message, provider=self.name)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()
