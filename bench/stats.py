"""Percentiles and the median-of-runs summary every benchmark figure uses."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def summarize(runs: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """For each figure: the median of the runs, with min and max beside it."""
    keys = runs[0].keys()
    return {
        k: {
            "median": statistics.median(r[k] for r in runs),
            "min": min(r[k] for r in runs),
            "max": max(r[k] for r in runs),
        }
        for k in keys
    }
