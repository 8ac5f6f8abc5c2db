"""`python -m bench`: run the benchmark scenarios, print one table, write it as JSON.

Every figure is the median of ``--runs`` runs (each on a fresh stack) with min and max beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import scenarios
from bench.scenarios import Figures, Sizes
from bench.stack import describe_servers
from bench.stats import summarize

# (scenario, figure) -> (target, stretch, higher is better) from issue 7.
TARGETS: dict[tuple[str, str], tuple[float, float, bool]] = {
    ("1 unary closed loop", "accepted_per_s"): (5000.0, 7000.0, True),
    ("2 unary open loop 1000/s", "latency_p99_ms"): (25, 10, False),
    ("3 bulk 1000 per call", "recipients_per_s"): (50_000, 100_000, True),
    ("4 delivery to webhook sink", "deliveries_per_s"): (5000, 10_000, True),
    ("4 delivery to webhook sink", "lost"): (0, 0, False),
    ("4 delivery to webhook sink", "duplicated"): (0, 0, False),
    ("5 end to end 2000/s", "e2e_p99_ms"): (200, 50, False),
    # The scheduler's lateness: due -> claimed, while workers have room (see scenarios.scheduled).
    ("6 scheduled due within 1 s", "claim_lateness_with_room_p99_ms"): (250, 100, False),
}
RSS_TARGET_MB = (300.0, 150.0)


def _scenarios(sizes: Sizes) -> dict[str, Callable[[], Figures]]:
    return {
        "0 gRPC floor: health Check": lambda: scenarios.grpc_floor(sizes),
        "0 bare grpcio server: health Check": lambda: scenarios.bare_grpc_floor(
            sizes, TARGETS[("1 unary closed loop", "accepted_per_s")][0]
        ),
        "1 unary closed loop": lambda: scenarios.unary_closed(sizes),
        # Not in the issue: a rate this box sustains, for the latency below saturation.
        "2 unary open loop 250/s": lambda: scenarios.unary_open(sizes, 250),
        "2 unary open loop 1000/s": lambda: scenarios.unary_open(sizes, 1000),
        "2 unary open loop 2000/s": lambda: scenarios.unary_open(sizes, 2000),
        "3 bulk 1000 per call": lambda: scenarios.bulk(sizes),
        "4 delivery to webhook sink": lambda: scenarios.delivery(sizes),
        "4 bare aiohttp client: POST to the sink": lambda: scenarios.bare_http_floor(
            sizes, TARGETS[("4 delivery to webhook sink", "deliveries_per_s")][0]
        ),
        "5 end to end 2000/s": lambda: scenarios.end_to_end(sizes, 2000),
        "6 scheduled due within 1 s": lambda: scenarios.scheduled(sizes),
    }


def _shown(value: float) -> str:
    # CPU per call is a fraction of a millisecond: one decimal would round it away.
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def _verdict(scenario: str, figure: str, value: float) -> str:
    if figure.startswith("peak_rss_"):
        target, stretch, higher = (*RSS_TARGET_MB, False)
    elif (scenario, figure) in TARGETS:
        target, stretch, higher = TARGETS[(scenario, figure)]
    else:
        return ""

    def met(bound: float) -> bool:
        return value >= bound if higher else value <= bound

    label = f"target {target:g}"
    return f"{label}: " + ("stretch met" if met(stretch) else "met" if met(target) else "MISSED")


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (median shown)")
    parser.add_argument("--only", default="", help="comma-separated scenario numbers, e.g. 1,4")
    parser.add_argument("--quick", action="store_true", help="small sizes, to try the harness")
    parser.add_argument("--seconds", type=float, default=None, help="length of timed scenarios")
    parser.add_argument("--deliveries", type=int, default=None)
    parser.add_argument("--scheduled", type=int, default=None)
    parser.add_argument("--api-processes", type=int, default=2)
    parser.add_argument(
        "--connections", type=int, default=8, help="gRPC connections per load generator"
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=64, help="unary calls in flight")
    parser.add_argument(
        "--bulk-concurrency",
        type=int,
        default=Sizes.bulk_concurrency,
        help="BulkSend calls in flight",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results/latest.json"))
    args = parser.parse_args()
    quick = Sizes(seconds=3, deliveries=5000, scheduled=5000)
    base = quick if args.quick else Sizes()
    sizes = Sizes(
        seconds=args.seconds or base.seconds,
        concurrency=args.concurrency,
        bulk_concurrency=args.bulk_concurrency,
        deliveries=args.deliveries or base.deliveries,
        scheduled=args.scheduled or base.scheduled,
        api_processes=args.api_processes,
        connections=args.connections,
        workers=args.workers,
    )
    wanted = {s.strip() for s in args.only.split(",") if s.strip()}
    header = (
        f"stack: {describe_servers()}; notifyd: {sizes.api_processes} API process(es), "
        f"{sizes.workers} worker process(es); {sizes.connections} gRPC connections per load "
        f"generator; webhook sink and load generators in their own "
        f"processes; {platform.machine()} with {os.cpu_count()} cores; {args.runs} run(s) each"
    )
    print(header, flush=True)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, run in _scenarios(sizes).items():
        if wanted and name.split()[0] not in wanted:
            continue
        runs = []
        for i in range(args.runs):
            figures = run()
            shown = ", ".join(f"{k}={_shown(v)}" for k, v in figures.items())
            print(f"  {name}, run {i + 1}: {shown}", flush=True)
            runs.append(figures)
        results[name] = summarize(runs)

    print()
    print(f"{'scenario: figure':70} {'median':>10} {'min':>10} {'max':>10}")
    for scenario, summary in results.items():
        for figure, s in summary.items():
            label = f"{scenario}: {figure}"
            verdict = _verdict(scenario, figure, s["median"])
            values = " ".join(f"{_shown(s[k]):>10}" for k in ("median", "min", "max"))
            print(f"{label:70} {values}  {verdict}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(),
                "stack": header,
                "runs": args.runs,
                "sizes": sizes.__dict__,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
