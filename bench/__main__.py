"""`python -m bench [--runs N] [--scheduled N]`: run the benchmarks, print a table, write JSON."""

from __future__ import annotations

import argparse
import json
import platform
from datetime import UTC, datetime
from pathlib import Path

from bench import scheduled
from bench.stack import Stack
from bench.stats import summarize


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (median reported)")
    parser.add_argument("--scheduled", type=int, default=50_000, help="scheduled notifications")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--out", type=Path, default=Path("bench-results/latest.json"))
    args = parser.parse_args()

    print(
        f"stack: {Stack().describe()}; {args.workers} worker process(es); "
        f"{platform.machine()} with {__import__('os').cpu_count()} cores"
    )
    results: dict[str, dict[str, dict[str, float]]] = {}
    runs = []
    for i in range(args.runs):
        figures = scheduled.run(args.scheduled, args.workers)
        print(f"  scheduled run {i + 1}: " + ", ".join(f"{k}={v:.1f}" for k, v in figures.items()))
        runs.append(figures)
    results[f"scheduled ({args.scheduled} due within 1 s)"] = summarize(runs)

    print()
    print(f"{'scenario / figure':58} {'median':>10} {'min':>10} {'max':>10}")
    for scenario, figures in results.items():
        for name, s in figures.items():
            label = f"{scenario}: {name}"
            print(f"{label:58} {s['median']:>10.1f} {s['min']:>10.1f} {s['max']:>10.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"when": datetime.now(UTC).isoformat(), "runs": args.runs, "results": results},
            indent=2,
        )
    )
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
