"""A webhook receiver for the fault tests, run as its own process (``python sink.py --log F``).

It listens on 127.0.0.1 (an ephemeral port, printed as ``sink listening on PORT``), and for every
POST appends one JSON line to the log *when the request arrives*, before answering, so that a
request whose sender dies while waiting for the answer is still on record:

    {"id": webhook-id, "body_id": data.id of the payload, "ts": webhook-timestamp,
     "t": arrival (epoch seconds), "status": the status it answers with, "delay": seconds}

A request whose body is cut short (its sender died mid-request) is logged with status 0 and not
answered: no receiver would take a truncated body for a delivery.

Its behaviour is changed at run time through ``POST /_control`` with a JSON object:
``status`` (the HTTP status to answer), ``delay`` (seconds to wait before answering) and
``delays`` (a list cycled through in arrival order, overriding ``delay`` while non-empty).
``GET /_control`` returns the current settings.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class Sink:
    def __init__(self, log: Path) -> None:
        self.lock = threading.Lock()
        self.status = 200
        self.delay = 0.0
        self.delays: list[float] = []
        self.arrivals = itertools.count()
        self.log = log.open("a", buffering=1, encoding="utf-8")

    def settings(self) -> dict[str, Any]:
        return {"status": self.status, "delay": self.delay, "delays": self.delays}

    def configure(self, changes: dict[str, Any]) -> None:
        with self.lock:
            if "status" in changes:
                self.status = int(changes["status"])
            if "delay" in changes:
                self.delay = float(changes["delay"])
            if "delays" in changes:
                self.delays = [float(d) for d in changes["delays"]]

    def record(
        self, webhook_id: str, timestamp: str, body: bytes, *, complete: bool
    ) -> tuple[int, float]:
        try:
            body_id = str(json.loads(body)["data"]["id"])
        except (ValueError, KeyError, TypeError):
            body_id = ""
        with self.lock:
            n = next(self.arrivals)
            status = self.status if complete else 0
            delay = self.delays[n % len(self.delays)] if self.delays else self.delay
            if not complete:
                delay = 0.0
            entry = {
                "id": webhook_id,
                "body_id": body_id,
                "ts": timestamp,
                "t": time.time(),
                "status": status,
                "delay": delay,
            }
            self.log.write(json.dumps(entry) + "\n")
        return status, delay


def make_handler(sink: Sink) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _reply(self, status: int, body: bytes = b"") -> None:
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            if body:
                self.send_header("content-type", "application/json")
            self.end_headers()
            if body:
                self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/_control":
                self._reply(200, json.dumps(sink.settings()).encode())
            else:
                self._reply(404)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path == "/_control":
                sink.configure(json.loads(body or b"{}"))
                self._reply(200, json.dumps(sink.settings()).encode())
                return
            expected = int(self.headers.get("content-length", "0"))
            status, delay = sink.record(
                self.headers.get("webhook-id", ""),
                self.headers.get("webhook-timestamp", ""),
                body,
                complete=len(body) == expected,
            )
            if status == 0:
                # The sender died mid-request: a receiver never sees a truncated body as a
                # delivery, so neither does the record.
                self.close_connection = True
                return
            if delay > 0:
                time.sleep(delay)
            try:
                self._reply(status)
            except OSError:
                # The sender is gone (killed, timed out): the arrival is on record already.
                self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # A worker opens up to its concurrency in connections at once; the default backlog of 5
    # would drop SYNs and add a 1 s retransmit to some of them.
    request_queue_size = 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args()
    sink = Sink(args.log)
    server = Server(("127.0.0.1", 0), make_handler(sink))
    print(f"sink listening on {server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(poll_interval=0.1)


if __name__ == "__main__":
    main()
