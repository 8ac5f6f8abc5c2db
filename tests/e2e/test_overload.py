"""A burst of calls larger than the server takes at once: each is answered, none is dropped.

gRPC core keeps calls the Python server has not picked up yet in a queue, and by default it
sheds that queue above 1,000 calls by answering CANCELLED at random. A caller reads CANCELLED
as "I cancelled it" and does not retry, so a send shed this way is lost to it. notifyd raises
that limit (to 5,000): a burst waits its turn, bounded by each caller's own deadline.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.harness import Notifyd

pytestmark = pytest.mark.e2e

BURST = 4000


async def _burst(address: str) -> Counter[str]:
    codes: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        async def check() -> None:
            try:
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=60)
                codes["OK"] += 1
            except grpc.aio.AioRpcError as error:
                codes[error.code().name] += 1

        await asyncio.gather(*(check() for _ in range(BURST)))
    return codes


def test_a_burst_beyond_the_default_pending_limit_is_served_not_shed(notifyd: Notifyd) -> None:
    codes = asyncio.run(_burst(notifyd.address))
    assert codes == Counter({"OK": BURST}), codes
