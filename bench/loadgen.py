"""A load generator, run as its own process: drives notifyd over gRPC and prints one JSON object.

Modes:
- ``unary-closed``: ``--concurrency`` SendNotification calls always in flight for
  ``--seconds``; every OK answer is one accepted notification (persisted and queued).
- ``unary-open``: SendNotification at a fixed ``--rate`` regardless of answers (open loop);
  each latency runs from the call's scheduled send time, so a stalled server shows up as
  latency instead of silently slowing the generator down (coordinated omission).
- ``bulk-closed``: ``--concurrency`` BulkSend calls of ``--recipients`` each in flight.

With ``--sent-log FILE`` it writes `<notification id> <scheduled send time>` per accepted
notification (the end-to-end scenario matches them with the sink's arrivals).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from interfaces.grpc.gen.notify.v1 import notification_pb2 as pb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as svc_grpc


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.metadata = (("authorization", f"Bearer {args.key}"),)
        self.prefix = uuid.uuid4().hex[:12]
        self.sequence = 0
        self.ok = 0
        self.recipients = 0
        self.errors: Counter[str] = Counter()
        self.latencies_ms: list[float] = []
        self.sent: list[str] = []

    def _next(self) -> int:
        self.sequence += 1
        return self.sequence

    def unary_request(self) -> svc.SendNotificationRequest:
        n = self._next()
        return svc.SendNotificationRequest(
            request_id=f"{self.prefix}-{n}",
            user_id=f"user-{n % 10_000}",
            channel=pb.CHANNEL_WEBHOOK,
            category="bench",
            content=pb.Content(title="bench", body=f"notification {n}"),
            address=pb.Address(webhook_url=self.args.url),
        )

    def bulk_request(self) -> svc.BulkSendRequest:
        n = self._next()
        return svc.BulkSendRequest(
            request_id=f"{self.prefix}-{n}",
            channel=pb.CHANNEL_WEBHOOK,
            category="bench",
            content=pb.Content(title="bench", body=f"bulk {n}"),
            recipients=[
                svc.BulkRecipient(
                    user_id=f"user-{n}-{i}", address=pb.Address(webhook_url=self.args.url)
                )
                for i in range(self.args.recipients)
            ],
        )

    async def call_unary(self, stub: svc_grpc.NotificationServiceStub, scheduled: float) -> None:
        try:
            response = await stub.SendNotification(
                self.unary_request(), metadata=self.metadata, timeout=30
            )
        except grpc.aio.AioRpcError as error:
            self.errors[error.code().name] += 1
            return
        done = time.time()
        self.ok += 1
        self.latencies_ms.append((done - scheduled) * 1000)
        if self.args.sent_log:
            self.sent.append(f"{response.notification.id} {scheduled:.6f}\n")

    async def call_bulk(self, stub: svc_grpc.NotificationServiceStub) -> None:
        started = time.time()
        try:
            response = await stub.BulkSend(self.bulk_request(), metadata=self.metadata, timeout=60)
        except grpc.aio.AioRpcError as error:
            self.errors[error.code().name] += 1
            return
        self.ok += 1
        self.recipients += response.accepted_count
        self.latencies_ms.append((time.time() - started) * 1000)

    async def call_health(self, stub: health_pb2_grpc.HealthStub) -> None:
        started = time.time()
        try:
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=30)
        except grpc.aio.AioRpcError as error:
            self.errors[error.code().name] += 1
            return
        self.ok += 1
        self.latencies_ms.append((time.time() - started) * 1000)

    async def closed(self, channels: list[grpc.aio.Channel], mode: str) -> None:
        deadline = time.time() + self.args.seconds

        async def lane(channel: grpc.aio.Channel) -> None:
            stub = svc_grpc.NotificationServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            while time.time() < deadline:
                if mode == "bulk-closed":
                    await self.call_bulk(stub)
                elif mode == "health-closed":
                    await self.call_health(health)
                else:
                    await self.call_unary(stub, time.time())

        await asyncio.gather(
            *(lane(channels[i % len(channels)]) for i in range(self.args.concurrency))
        )

    async def open(self, channels: list[grpc.aio.Channel]) -> None:
        stubs = [svc_grpc.NotificationServiceStub(channel) for channel in channels]
        rate = self.args.rate
        total = int(rate * self.args.seconds)
        start = time.time() + 0.05
        tasks: set[asyncio.Task[None]] = set()
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.call_unary(stubs[i % len(stubs)], scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    async def run(self) -> dict[str, Any]:
        # A channel of its own for each connection: several callers' connections are what the
        # kernel spreads over the API processes (SO_REUSEPORT balances connections, not calls).
        options = [
            ("grpc.max_send_message_length", 16 * 1024 * 1024),
            ("grpc.use_local_subchannel_pool", 1),
        ]
        channels = [
            grpc.aio.insecure_channel(self.args.address, options=options)
            for _ in range(self.args.connections)
        ]
        try:
            t0 = time.time()
            cpu0 = time.process_time()
            if self.args.mode == "unary-open":
                await self.open(channels)
            else:
                await self.closed(channels, self.args.mode)
            t1 = time.time()
            cpu = time.process_time() - cpu0
        finally:
            for channel in channels:
                await channel.close()
        return {
            "ok": self.ok,
            "recipients": self.recipients,
            "errors": dict(self.errors),
            "latencies_ms": self.latencies_ms,
            "t0": t0,
            "t1": t1,
            # Its own CPU while it drove the load: the stack's share of the box is the rest.
            "cpu_s": cpu,
        }


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.loadgen")
    parser.add_argument("--address", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--url", required=True, help="the webhook sink's URL")
    parser.add_argument(
        "--mode", choices=["unary-closed", "unary-open", "bulk-closed", "health-closed"]
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--connections", type=int, default=1, help="gRPC connections to spread calls over"
    )
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--recipients", type=int, default=1000)
    parser.add_argument("--sent-log", default="")
    parser.add_argument("--result", required=True, help="where to write the JSON result")
    args = parser.parse_args()
    import uvloop

    load = Load(args)
    result = uvloop.run(load.run())
    if args.sent_log:
        Path(args.sent_log).write_text("".join(load.sent))
    Path(args.result).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
