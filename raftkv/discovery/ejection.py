"""Passive outlier ejection: take an instance out of rotation when its calls fail, bring it back later.

Pure logic with the time passed in, after Envoy's outlier detection and gRPC's gRFC A50 (whose defaults
these are), plus Envoy's and Finagle's inline *consecutive failures* rule, which reacts within one call
instead of one interval:

- ``consecutive_failures`` (5) failed calls in a row eject at once.
- Every ``interval`` (10 s) the counts of the past interval are judged: *success rate* (an instance whose
  rate is below mean − ``stdev_factor`` (1.9) × stdev, among at least ``minimum_hosts`` (5) instances with
  ``request_volume`` (100) calls) and *failure percentage* (above ``failure_threshold`` % (85) with at
  least ``failure_volume`` (50) calls, among ``minimum_hosts``).
- An ejection lasts ``base_ejection`` (30 s) × its multiplier; the multiplier grows by one per ejection and
  shrinks by one per interval without one, and the time is capped at ``max_ejection`` (300 s).
- At most ``max_ejection_percent`` (10 %) of the instances are ejected at once, but always one may be.
- ``readmit`` ends an ejection early (a successful active health check does, as in Envoy).

Which failures count is the caller's business (``pool.py`` counts those that say something about the
instance: unavailable, deadline, internal, unknown, resource exhausted).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field


@dataclass(frozen=True)
class OutlierConfig:
    consecutive_failures: int = 5
    interval: float = 10.0
    base_ejection: float = 30.0
    max_ejection: float = 300.0
    max_ejection_percent: float = 10.0
    stdev_factor: float = 1.9
    minimum_hosts: int = 5
    request_volume: int = 100
    failure_threshold: float = 85.0
    failure_volume: int = 50

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1 or self.interval <= 0 or self.base_ejection <= 0:
            raise ValueError("consecutive_failures, interval and base_ejection must be positive")
        if not 0 <= self.max_ejection_percent <= 100:
            raise ValueError("max_ejection_percent must be between 0 and 100")


@dataclass
class _Track:
    consecutive: int = 0
    successes: int = 0
    failures: int = 0
    multiplier: int = 0
    ejected_until: float | None = None
    ejections: int = 0


@dataclass
class OutlierDetector:
    config: OutlierConfig = field(default_factory=OutlierConfig)
    _tracks: dict[str, _Track] = field(default_factory=dict)
    _next_interval: float | None = None

    def track(self, ids: list[str]) -> None:
        """Follow exactly these instances (new ones start clean, gone ones are forgotten)."""
        self._tracks = {i: self._tracks.get(i) or _Track() for i in ids}

    def is_ejected(self, instance_id: str) -> bool:
        track = self._tracks.get(instance_id)
        return track is not None and track.ejected_until is not None

    def ejections(self, instance_id: str) -> int:
        track = self._tracks.get(instance_id)
        return track.ejections if track else 0

    def ejected_count(self) -> int:
        return sum(1 for t in self._tracks.values() if t.ejected_until is not None)

    def _may_eject(self) -> bool:
        limit = max(1, math.floor(len(self._tracks) * self.config.max_ejection_percent / 100))
        return self.ejected_count() < limit

    def _eject(self, track: _Track, now: float) -> None:
        track.multiplier += 1
        track.ejections += 1
        track.consecutive = 0
        track.ejected_until = now + min(self.config.base_ejection * track.multiplier,
                                        max(self.config.max_ejection, self.config.base_ejection))

    def record(self, instance_id: str, ok: bool, now: float) -> bool:
        """Count one call's outcome; True if it ejected the instance."""
        if self._next_interval is None:
            self._next_interval = now + self.config.interval
        track = self._tracks.get(instance_id)
        if track is None:
            return False
        if ok:
            track.successes += 1
            track.consecutive = 0
            return False
        track.failures += 1
        track.consecutive += 1
        if (track.ejected_until is None and track.consecutive >= self.config.consecutive_failures
                and self._may_eject()):
            self._eject(track, now)
            return True
        return False

    def readmit(self, instance_id: str) -> bool:
        track = self._tracks.get(instance_id)
        if track is None or track.ejected_until is None:
            return False
        track.ejected_until, track.consecutive = None, 0
        return True

    def next_due(self) -> float:
        """When ``sweep`` next has something to do."""
        due = [t.ejected_until for t in self._tracks.values() if t.ejected_until is not None]
        if self._next_interval is not None:
            due.append(self._next_interval)
        return min(due, default=math.inf)

    def sweep(self, now: float) -> bool:
        """End ejections that are over; at each interval boundary judge the interval's counts. True if any
        instance changed between ejected and not."""
        changed = False
        for track in self._tracks.values():
            if track.ejected_until is not None and now >= track.ejected_until:
                track.ejected_until, track.consecutive = None, 0
                changed = True
        if self._next_interval is not None and now >= self._next_interval:
            changed |= self._judge_interval(now)
            self._next_interval = now + self.config.interval
        return changed

    def _judge_interval(self, now: float) -> bool:
        c = self.config
        changed = False
        tracks = list(self._tracks.values())
        rated = [t for t in tracks if t.successes + t.failures >= c.request_volume]
        if len(rated) >= c.minimum_hosts:
            rates = [t.successes / (t.successes + t.failures) for t in rated]
            floor = statistics.fmean(rates) - c.stdev_factor * statistics.pstdev(rates)
            for track, rate in zip(rated, rates, strict=True):
                if rate < floor and track.ejected_until is None and self._may_eject():
                    self._eject(track, now)
                    changed = True
        voluminous = [t for t in tracks if t.successes + t.failures >= c.failure_volume]
        if len(voluminous) >= c.minimum_hosts:
            for track in voluminous:
                if (100 * track.failures / (track.successes + track.failures) > c.failure_threshold
                        and track.ejected_until is None and self._may_eject()):
                    self._eject(track, now)
                    changed = True
        for track in tracks:
            if track.ejected_until is None and track.multiplier and not track.failures:
                track.multiplier -= 1
            track.successes = track.failures = 0
        return changed
