"""What one workload run measured, and how it is summarised."""

from __future__ import annotations

import math
from dataclasses import dataclass


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


@dataclass(frozen=True)
class Result:
    """One workload on one cluster. Latencies are in seconds; ``fsyncs_per_s`` is None when unknown."""

    workload: str
    target: str
    ok: int
    errors: int
    elapsed: float
    latencies: tuple[float, ...]
    fsyncs_per_s: float | None

    @property
    def throughput(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    def latency(self, fraction: float) -> float:
        return percentile(sorted(self.latencies), fraction)

    def row(self) -> str:
        ordered = sorted(self.latencies)
        ms = [1000 * percentile(ordered, f) for f in (0.5, 0.9, 0.99, 1.0)]
        fsyncs = "n/a" if self.fsyncs_per_s is None else f"{self.fsyncs_per_s:,.0f}"
        return (
            f"{self.target:<7} {self.workload:<16} {self.throughput:>9,.0f}/s  p50 {ms[0]:6.1f}  p90 {ms[1]:6.1f}  "
            f"p99 {ms[2]:6.1f}  max {ms[3]:7.1f} ms  fsyncs/s {fsyncs:>6}  errors {self.errors}"
        )
