"""Serving a sandbox peer's ASGI app with Hypercorn on a free local port (HTTP/1.1, or
HTTP/2 over TLS with ALPN, as APNs speaks)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
from hypercorn.asyncio import serve
from hypercorn.config import Config

# The ASGI callables every sandbox peer is written against.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer the server's lifespan protocol: peers have nothing to set up or tear down."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_body(receive: Receive, max_bytes: int | None = None) -> bytes | None:
    """The request body; None when the client left before sending all of it, or when it is
    longer than ``max_bytes``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


@dataclass
class SandboxTls:
    """A throwaway CA and a localhost certificate it signed. Clients trust ``ca_file``."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def create(cls, directory: Path) -> SandboxTls:
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        cert = ca.issue_cert("localhost", "127.0.0.1")
        tls = cls(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
        ca.cert_pem.write_to_path(str(tls.ca_file))
        cert.private_key_and_cert_chain_pem.write_to_path(str(tls.cert_file))
        cert.private_key_pem.write_to_path(str(tls.key_file))
        return tls

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context


class RunningPeer:
    def __init__(self, base_url: str, task: asyncio.Task[None], stop: asyncio.Event) -> None:
        self.base_url = base_url
        self._task = task
        self._stop = stop

    async def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self._task, timeout=5)


async def serve_asgi(
    app: Any, *, tls: SandboxTls | None = None, host: str = "127.0.0.1", port: int = 0
) -> RunningPeer:
    """Start ``app`` in this event loop; ``base_url`` is where it listens. With ``tls`` it
    speaks HTTPS and offers HTTP/2 (h2) and HTTP/1.1 by ALPN."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    sock.set_inheritable(True)
    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    # Hypercorn's own logger, without a handler of its own: its errors reach the process's
    # one (masking) handler like every other library's.
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 1
    if tls is not None:
        config.certfile = str(tls.cert_file)
        config.keyfile = str(tls.key_file)
    stop = asyncio.Event()

    async def run() -> None:
        try:
            await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
        finally:
            sock.close()

    task = asyncio.create_task(run())
    scheme = "https" if tls is not None else "http"
    # Wait until it accepts connections, so callers may use it at once.
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection(host, bound_port)
            writer.close()
            break
        except OSError:
            await asyncio.sleep(0.01)
    return RunningPeer(f"{scheme}://{'localhost' if tls else host}:{bound_port}", task, stop)
