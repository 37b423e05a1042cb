"""What one workload run measured, and how it is summarised."""

from __future__ import annotations

import math
from dataclasses import dataclass

from raftkv.bench.scrape import ClusterUsage


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


@dataclass(frozen=True)
class Result:
    """One workload on one cluster. Latencies are in seconds; ``usage`` is None without metrics URLs."""

    workload: str
    target: str
    ok: int
    errors: int
    elapsed: float
    latencies: tuple[float, ...]
    usage: ClusterUsage | None

    @property
    def throughput(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    def latency(self, fraction: float) -> float:
        return percentile(sorted(self.latencies), fraction)

    def fsyncs_text(self) -> str:
        return "n/a" if self.usage is None else f"{self.usage.fsyncs_per_s:,.0f}"

    def cpu_text(self) -> str:
        """Busiest member's and all members' CPU microseconds per request, as ``busiest/all`` (relays
        included; their share follows in brackets when there is one)."""
        u = self.usage
        if u is None:
            return "n/a"
        relay = f" [relay {u.relay_cpu_us_per_op:,.0f}]" if u.relay_cpu_us_per_op else ""
        return f"{u.busiest_cpu_us_per_op:,.0f}/{u.total_cpu_us_per_op:,.0f}{relay}"

    def row(self) -> str:
        ordered = sorted(self.latencies)
        ms = [1000 * percentile(ordered, f) for f in (0.5, 0.9, 0.99, 1.0)]
        fsyncs, cpu = self.fsyncs_text(), self.cpu_text()
        return (
            f"{self.target:<7} {self.workload:<16} {self.throughput:>9,.0f}/s  p50 {ms[0]:6.1f}  p90 {ms[1]:6.1f}  "
            f"p99 {ms[2]:6.1f}  max {ms[3]:7.1f} ms  fsyncs/s {fsyncs:>6}  cpu-us/op {cpu:>9}  errors {self.errors}"
        )
