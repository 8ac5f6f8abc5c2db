"""A sandbox SMTP relay (aiosmtpd) in the caller's event loop: optional AUTH and STARTTLS,
journals each accepted message once per Message-ID, and lets tests script refusals, dropped
connections and silences."""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import hmac
import uuid
import warnings
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from infrastructure.sandbox.http import SandboxTls
from infrastructure.sandbox.journal import SandboxJournal

Stage = Literal["MAIL", "RCPT", "DATA"]
_HOSTNAME = "sandbox.notifyd.local"


@dataclass(frozen=True, slots=True)
class _Scripted:
    """A forced answer for the next command at a stage: a reply line, or (at the end of DATA)
    a drop or a silence after the message was taken."""

    reply: str = ""
    drop: bool = False
    hang_seconds: float = 0.0


class _Session(SMTP):
    """One client connection; the peer keeps the open ones so it can close them as a relay's
    idle timeout would."""

    def __init__(self, peer: SandboxSmtp, **kwargs: Any) -> None:
        super().__init__(_Handler(peer), **kwargs)
        self._peer = peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._peer._open.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._peer._open.discard(self)
        super().connection_lost(error)


class _Handler:
    """aiosmtpd's hooks. Kept apart from SandboxSmtp because aiosmtpd takes every ``handle_*``
    and ``auth_*`` member of its handler as a hook."""

    def __init__(self, peer: SandboxSmtp) -> None:
        self._peer = peer

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if (scripted := self._peer._next("MAIL")) is not None:
            return await _refuse(server, scripted.reply)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if (scripted := self._peer._next("RCPT")) is not None:
            return await _refuse(server, scripted.reply)
        if "@" not in address:
            return "553 5.1.3 Recipient address lacks a domain"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return await self._peer._receive(server, envelope)


class SandboxSmtp:
    """``await peer.start()`` (or ``async with``) listens on ``host``:``port``. With
    ``username``/``password`` it requires AUTH (PLAIN or LOGIN; wrong credentials get 535);
    with ``tls`` it offers STARTTLS and requires it before AUTH and MAIL, or, with
    ``implicit_tls``, speaks TLS from the first byte (smtps)."""

    def __init__(
        self,
        *,
        directory: Path | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: SandboxTls | None = None,
        implicit_tls: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        idle_timeout: float = 300.0,
    ) -> None:
        self.journal = SandboxJournal("smtp", directory)
        self.host = host
        self.port = port
        if implicit_tls and tls is None:
            raise ValueError("implicit_tls needs tls")
        self.tls = tls
        self.implicit_tls = implicit_tls
        self._username = username
        self._password = password
        self._idle_timeout = idle_timeout
        self._server: asyncio.Server | None = None
        self._open: set[_Session] = set()
        self._scripts: dict[Stage, deque[_Scripted]] = {
            "MAIL": deque(),
            "RCPT": deque(),
            "DATA": deque(),
        }
        # Message-ID -> the queue id it got, so a repeat is answered alike and journalled once.
        self._queued: dict[str, str] = {}
        # Connections accepted so far, and repeats of an already accepted Message-ID.
        self.connections = 0
        self.repeats: Counter[str] = Counter()
        # Every message content accepted (repeats included), for tests to parse.
        self.received: list[bytes] = []

    @property
    def starttls(self) -> bool:
        return self.tls is not None and not self.implicit_tls

    @property
    def url(self) -> str:
        """Where a provider finds it: ``smtp://[user:password@]host:port`` (with STARTTLS when
        ``starttls``), or ``smtps://...``."""
        credentials = ""
        if self._username is not None:
            credentials = (
                f"{quote(self._username, safe='')}:{quote(self._password or '', safe='')}@"
            )
        scheme = "smtps" if self.implicit_tls else "smtp"
        return f"{scheme}://{credentials}{self.host}:{self.port}"

    async def start(self) -> SandboxSmtp:
        loop = asyncio.get_running_loop()
        tls = self.tls.server_context() if self.tls is not None and self.implicit_tls else None
        self._server = await loop.create_server(self._connection, self.host, self.port, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self._open):
            if session.transport is not None:
                session.transport.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> SandboxSmtp:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- scripting --------------------------------------------------------------------------------

    def fail_next(self, code: int, message: str, times: int = 1, at: Stage = "DATA") -> None:
        """Answer the next ``times`` MAIL, RCPT or (after the content) DATA with ``code``."""
        if not 400 <= code < 600:
            raise ValueError("a scripted failure is a 4xx or 5xx reply")
        self._script(at, _Scripted(reply=f"{code} {message}"), times)

    def drop_next(self, times: int = 1) -> None:
        """Take the next ``times`` messages, then close the connection without replying."""
        self._script("DATA", _Scripted(drop=True), times)

    def hang_next(self, seconds: float, times: int = 1) -> None:
        """Take the next ``times`` messages, then stay silent for ``seconds`` before replying."""
        self._script("DATA", _Scripted(hang_seconds=seconds), times)

    async def disconnect_all(self) -> None:
        """Close every open connection, as a relay's idle timeout does (421, then close)."""
        for session in list(self._open):
            transport = session.transport
            if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
                with contextlib.suppress(OSError, RuntimeError):
                    transport.write(f"421 4.4.2 {_HOSTNAME} idle timeout\r\n".encode())
                transport.close()
        # Let the closes reach the clients' event loop callbacks.
        await asyncio.sleep(0)

    def _script(self, stage: Stage, scripted: _Scripted, times: int) -> None:
        self._scripts[stage].extend([scripted] * times)

    def _next(self, stage: Stage) -> _Scripted | None:
        queue = self._scripts[stage]
        return queue.popleft() if queue else None

    # -- serving ----------------------------------------------------------------------------------

    def _connection(self) -> _Session:
        self.connections += 1
        with warnings.catch_warnings():
            # AUTH without TLS is what a plain sandbox offers, knowingly.
            warnings.simplefilter("ignore")
            return _Session(
                self,
                hostname=_HOSTNAME,
                tls_context=self.tls.server_context() if self.tls and self.starttls else None,
                require_starttls=self.starttls,
                auth_required=self._username is not None,
                # Over implicit TLS aiosmtpd does not know the session is encrypted.
                auth_require_tls=self.starttls,
                authenticator=self._authenticate,
                timeout=self._idle_timeout,
                loop=asyncio.get_running_loop(),
            )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if (
            self._username is not None
            and isinstance(data, LoginPassword)
            and hmac.compare_digest(data.login, self._username.encode())
            and hmac.compare_digest(data.password, (self._password or "").encode())
        ):
            return AuthResult(success=True, auth_data=data.login.decode())
        # handled=False: aiosmtpd answers 535 5.7.8.
        return AuthResult(success=False, handled=False)

    async def _receive(self, server: SMTP, envelope: Envelope) -> str:
        scripted = self._next("DATA")
        if scripted is not None and scripted.reply:
            return await _refuse(server, scripted.reply)
        raw = envelope.original_content or b""
        queue_id = self._accept(envelope, raw)
        if scripted is not None and scripted.drop:
            # Taken but never confirmed: the client cannot know whether it was accepted.
            if server.transport is not None:
                server.transport.close()
            # connection_lost cancels this handler; no reply ever goes out.
            await asyncio.Event().wait()
        if scripted is not None and scripted.hang_seconds:
            await asyncio.sleep(scripted.hang_seconds)
        return f"250 2.0.0 Ok: queued as {queue_id}"

    def _accept(self, envelope: Envelope, raw: bytes) -> str:
        """Journal the message, once per Message-ID; returns its queue id."""
        self.received.append(raw)
        message = message_from_bytes(raw, _class=EmailMessage, policy=email.policy.default)
        message_id = str(message.get("Message-ID", "")).strip()
        if message_id and message_id in self._queued:
            self.repeats[message_id] += 1
            return self._queued[message_id]
        queue_id = uuid.uuid4().hex[:12].upper()
        if message_id:
            self._queued[message_id] = queue_id
        self.journal.record(
            {
                "at": datetime.now(UTC).isoformat(),
                "peer": "smtp",
                "queue_id": queue_id,
                "from": envelope.mail_from,
                "to": list(envelope.rcpt_tos),
                "subject": str(message.get("Subject", "")),
                "message_id": message_id,
                "text": _part(message, "plain"),
                "html": _part(message, "html"),
            }
        )
        return queue_id


async def _refuse(server: SMTP, reply: str) -> str:
    """``reply`` as the answer; a 421 also closes the connection, as RFC 5321 4.2.2 has it."""
    if not reply.startswith("421"):
        return reply
    await server.push(reply)
    if server.transport is not None:
        server.transport.close()
    # connection_lost cancels the session's handler; nothing more is said.
    await asyncio.Event().wait()
    return reply


def _part(message: EmailMessage, subtype: str) -> str:
    body = message.get_body(preferencelist=(subtype,))
    if body is None or body.get_content_subtype() != subtype:
        return ""
    content = body.get_content()
    # The wire's CRLF line ends, as a reader of the journal expects them.
    return content.replace("\r\n", "\n") if isinstance(content, str) else ""
