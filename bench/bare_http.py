"""A webhook client with nothing behind it: aiohttp POSTs to the sink, each with its own
webhook-id, no Postgres, no Redis, no notifyd code. Scenario 4's second reading runs it to show
what sending a webhook from Python costs on the box before a delivery records anything. A lower
bound: the body is the same every time and nothing is signed.

`python -m bench.bare_http --url URL --count N --concurrency C --result FILE` writes one JSON
object: the POSTs answered 200, the time window and its own CPU seconds."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

# About the size of the Standard Webhooks body a delivery sends.
BODY = json.dumps({"type": "notification.bench", "data": {"body": "x" * 300}}).encode()


async def post_all(url: str, count: int, concurrency: int) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=10)
    ok = 0
    prefix = uuid.uuid4().hex[:12]
    counter = iter(range(count))
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False
    ) as session:

        async def lane() -> None:
            nonlocal ok
            for n in counter:
                headers = {
                    "content-type": "application/json",
                    "webhook-id": f"bare-{prefix}-{n}",
                    "webhook-timestamp": str(int(time.time())),
                    "webhook-signature": "v1,bench",
                }
                async with session.post(url, data=BODY, headers=headers) as response:
                    await response.read()
                    ok += response.status == 200

        t0, cpu0 = time.time(), time.process_time()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        t1, cpu = time.time(), time.process_time() - cpu0
    return {"ok": ok, "t0": t0, "t1": t1, "cpu_s": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.bare_http")
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--result", required=True, help="where to write the JSON result")
    args = parser.parse_args()
    result = uvloop.run(post_all(args.url, args.count, args.concurrency))
    Path(args.result).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
