"""Retry budget: retries may add at most ``ratio`` of the calls, plus a small floor, over a sliding window.

Finagle's ``RetryBudget`` (20 % of requests + 10 retries/s, 10 s window), Envoy's retry budget and Linkerd's
``retry_ratio``/``min_retries_per_second`` share the idea: a fixed "retry up to N times" multiplies load by
N exactly when the service is failing; a budget caps the extra load, while the floor keeps retries possible
for a client that makes few calls. Pure: the caller passes the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class RetryBudget:
    ratio: float = 0.2
    min_per_second: float = 10.0
    window: float = 10.0
    #: One bucket per second of the window: [calls, retries], indexed by whole seconds.
    _buckets: dict[int, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ratio < 0 or self.min_per_second < 0 or self.window < 1:
            raise ValueError("retry budget: ratio and floor must be >= 0 and the window >= 1 s")

    def _bucket(self, now: float) -> list[int]:
        second = math.floor(now)
        bucket = self._buckets.get(second)
        if bucket is None:
            oldest = second - math.ceil(self.window) + 1
            for stale in [s for s in self._buckets if s < oldest]:
                del self._buckets[stale]
            bucket = self._buckets[second] = [0, 0]
        return bucket

    def deposit(self, now: float) -> None:
        """Count one original call (not a retry)."""
        self._bucket(now)[0] += 1

    def allowed(self, now: float) -> float:
        """Retries the window still allows (may be fractional)."""
        self._bucket(now)
        calls = sum(b[0] for b in self._buckets.values())
        retries = sum(b[1] for b in self._buckets.values())
        return self.ratio * calls + self.min_per_second * self.window - retries

    def withdraw(self, now: float) -> bool:
        """Spend one retry if the budget allows it."""
        if self.allowed(now) < 1:
            return False
        self._bucket(now)[1] += 1
        return True
