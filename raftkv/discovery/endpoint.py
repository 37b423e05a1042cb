"""What a balancer knows about one instance: its load, its latency, its health. Pure data plus rules.

The latency estimate is Finagle's *peak EWMA*: an exponentially weighted moving average of round-trip times
that jumps straight up to a slower sample ("highly sensitive to peaks") and decays toward zero with time
constant ``tau`` while nothing is observed, so an instance that was slow once is tried again later rather
than starved for ever. A failed call is observed as ``error_penalty`` at least: errors count as load, so an
instance that fails fast does not look cheap and attract traffic (the "sinkhole" pitfall, SRE book ch. 20).
"""

from __future__ import annotations

import enum
import math
from typing import Any

from raftkv.discovery.record import Instance

#: Finagle's default decay time of the peak EWMA.
DEFAULT_TAU = 10.0
#: The latency a failed call counts as, unless it took longer.
DEFAULT_ERROR_PENALTY = 1.0
#: Cost of an instance with calls in flight but no measurement yet (Finagle's ``Penalty``): it is chosen only
#: against one that is as unknown, so a new instance gets one call at a time until it has a latency.
UNMEASURED_PENALTY = 1e9


class Health(enum.Enum):
    UNKNOWN = "unknown"            # no active check (yet): usable
    SERVING = "serving"
    NOT_SERVING = "not_serving"    # the instance says so: not usable
    UNREACHABLE = "unreachable"    # its health stream broke (connection lost): not usable until back


class PeakEwma:
    __slots__ = ("cost", "stamp", "tau")

    def __init__(self, tau: float = DEFAULT_TAU) -> None:
        self.cost, self.stamp, self.tau = 0.0, 0.0, tau

    def observe(self, rtt: float, now: float) -> None:
        decay = math.exp(-max(now - self.stamp, 0.0) / self.tau)
        self.cost = rtt if rtt > self.cost else self.cost * decay + rtt * (1.0 - decay)
        self.stamp = now

    def get(self, now: float) -> float:
        """The cost now: ``observe(0.0, now)``, as Finagle's ``get`` is, minus the work when there is no cost."""
        cost = self.cost
        if cost:
            cost *= math.exp(-max(now - self.stamp, 0.0) / self.tau)
            self.cost = cost
        self.stamp = now
        return cost


class Endpoint:
    """One instance in a pool. Mutated only by the pool (under its driver's lock)."""

    __slots__ = ("id", "addr", "instance", "weight", "outstanding", "ewma", "health", "down_until",
                 "connect_failures", "calls", "failures", "error_penalty", "conn")

    def __init__(self, instance: Instance, tau: float = DEFAULT_TAU,
                 error_penalty: float = DEFAULT_ERROR_PENALTY) -> None:
        self.id, self.addr, self.instance = instance.id, instance.addr, instance
        self.weight = instance.weight
        self.outstanding = 0
        self.ewma = PeakEwma(tau)
        self.health = Health.UNKNOWN
        #: After a failed connection: not picked before this time (doubling per repeat, like Finagle's
        #: fail-fast), unless an active health check says it is back sooner.
        self.down_until = 0.0
        self.connect_failures = 0
        self.calls = self.failures = 0
        self.error_penalty = error_penalty
        #: The transport a channel attaches (its connection to this instance); the pool never touches it.
        self.conn: Any = None

    def usable(self, now: float) -> bool:
        """Not known to be unusable: the instance did not say NOT_SERVING and is not known unreachable."""
        return self.health not in (Health.NOT_SERVING, Health.UNREACHABLE) and now >= self.down_until

    def load(self, now: float) -> float:
        """Peak-EWMA cost times calls in flight (plus one), per unit of weight: lower is better."""
        cost = self.ewma.get(now)
        if cost == 0.0 and self.outstanding:
            return UNMEASURED_PENALTY + self.outstanding
        return cost * (self.outstanding + 1) / self.weight

    def observe(self, rtt: float, ok: bool, now: float) -> None:
        self.calls += 1
        if not ok:
            self.failures += 1
            rtt = max(rtt, self.error_penalty)
        self.ewma.observe(rtt, now)

    def __repr__(self) -> str:
        return f"Endpoint({self.id!r}, {self.addr}, w={self.weight}, out={self.outstanding}, {self.health.value})"
