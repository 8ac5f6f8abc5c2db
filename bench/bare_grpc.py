"""A gRPC server with nothing but the standard health service: no notifyd, no interceptors.
Scenario 0's second reading runs it to show what grpcio itself costs per call on the box.

Run as ``python -m bench.bare_grpc --listen HOST:PORT``; several may share the port."""

from __future__ import annotations

import argparse

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2_grpc


async def serve(address: str) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(address)
    await server.start()
    print(f"listening on {address}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.bare_grpc")
    parser.add_argument("--listen", required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.listen))


if __name__ == "__main__":
    main()
