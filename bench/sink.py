"""The benchmark's webhook receiver, run as its own process: records each webhook-id and when it
arrived, answers 200 at once.

`python -m bench.sink --listen 127.0.0.1:0 --out FILE` prints `sink listening on http://H:P`
and appends `<webhook-id> <unix time>` lines to FILE (flushed every 0.2 s and at SIGTERM).
A bare asyncio protocol rather than a web framework, so the sink costs as little CPU as
possible and does not slow the notifyd processes it shares the two cores with.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path
from typing import IO, cast

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


class SinkProtocol(asyncio.Protocol):
    def __init__(self, records: list[str]) -> None:
        self._records = records
        self._buffer = b""
        self._transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio's classes.
        self._transport = cast(asyncio.WriteTransport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buffer[:end].decode("latin-1")
            length = 0
            webhook_id = ""
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "webhook-id":
                    webhook_id = value.strip()
            total = end + 4 + length
            if len(self._buffer) < total:
                return
            self._buffer = self._buffer[total:]
            if webhook_id:
                self._records.append(f"{webhook_id} {time.time():.6f}\n")
            assert self._transport is not None
            self._transport.write(RESPONSE)


async def serve(listen: str, out: IO[str]) -> None:
    host, _, port = listen.rpartition(":")
    records: list[str] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SinkProtocol(records), host, int(port), backlog=1024)
    bound = server.sockets[0].getsockname()
    print(f"sink listening on http://{bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def flush() -> None:
        if records:
            out.writelines(records)
            records.clear()
            out.flush()

    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)
        flush()
    server.close()
    flush()


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.sink")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with args.out.open("a") as out:
        try:
            import uvloop

            uvloop.run(serve(args.listen, out))
        except ImportError:  # pragma: no cover - uvloop is a dependency
            asyncio.run(serve(args.listen, out))
    sys.exit(0)


if __name__ == "__main__":
    main()
