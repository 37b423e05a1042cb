"""Load-balancing policies: which of the candidate endpoints takes the next call. Pure and clock-injected.

A policy sees only the *candidates* the pool offers (usable, not ejected; see ``pool.py``) and never keeps a
reference to an endpoint the pool dropped. ``rebuild`` is called whenever the set of endpoints changes.

- ``round_robin``: smooth weighted round robin (nginx's): over any window of W picks (W = total weight)
  each endpoint is picked exactly its weight's times, spread evenly, not in bursts.
- ``p2c`` (default): power of two choices (Mitzenmacher) over peak-EWMA cost × (calls in flight + 1) per
  unit of weight, Finagle's and Linkerd's balancer: two distinct random candidates, the cheaper one wins.
  It needs no global view, avoids the herd a "least loaded" pick makes, and sheds a slow instance quickly.
- ``ring_hash``: consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2016): a key goes to
  the first endpoint clockwise from its hash whose calls in flight are below ⌈(1+ε)·(in flight+1)·w/W⌉, so
  no endpoint carries more than (1+ε) times its share, and a key moves only when its endpoint is full or
  gone. Keys come from request metadata or a callable (see ``channel``); a call without a key goes to a
  random candidate (gRFC A76 does the same).
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Sequence
from typing import Protocol

from raftkv.discovery.endpoint import Endpoint

#: Ring entries per unit of weight. 160 per host is ketama's choice; with ε=0.25 it keeps the spread
#: within bounds without making the ring large (3 instances: 480 entries).
VNODES = 160
DEFAULT_EPSILON = 0.25


class Policy(Protocol):
    name: str

    def rebuild(self, endpoints: Sequence[Endpoint]) -> None: ...

    def pick(self, candidates: Sequence[Endpoint], key: bytes | None, now: float) -> Endpoint: ...


def key_hash(data: bytes) -> int:
    """A 64-bit hash every process computes alike (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class RoundRobin:
    name = "round_robin"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._current: dict[str, int] = {}
        self._next = (rng or random.Random()).randrange(1 << 16)  # clients start at different places

    def rebuild(self, endpoints: Sequence[Endpoint]) -> None:
        self._current = {e.id: self._current.get(e.id, 0) for e in endpoints}

    def pick(self, candidates: Sequence[Endpoint], key: bytes | None, now: float) -> Endpoint:
        first = candidates[0].weight
        if all(e.weight == first for e in candidates):
            self._next += 1
            return candidates[self._next % len(candidates)]
        total, best, best_value = 0, candidates[0], -math.inf
        current = self._current
        for e in candidates:
            value = current.get(e.id, 0) + e.weight
            current[e.id] = value
            total += e.weight
            if value > best_value:
                best, best_value = e, value
        current[best.id] -= total
        return best


class P2C:
    name = "p2c"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._random = (rng or random.Random()).random

    def rebuild(self, endpoints: Sequence[Endpoint]) -> None:
        pass

    def pick(self, candidates: Sequence[Endpoint], key: bytes | None, now: float) -> Endpoint:
        n = len(candidates)
        if n == 1:
            return candidates[0]
        i = int(self._random() * n)
        j = int(self._random() * (n - 1))
        if j >= i:
            j += 1
        a, b = candidates[i], candidates[j]
        return a if a.load(now) <= b.load(now) else b


class RingHash:
    name = "ring_hash"

    def __init__(self, epsilon: float = DEFAULT_EPSILON, vnodes: int = VNODES,
                 rng: random.Random | None = None) -> None:
        if not epsilon > 0:
            raise ValueError("ring_hash epsilon must be positive (0 would forbid any imbalance)")
        self.epsilon, self.vnodes = epsilon, vnodes
        self._positions: list[int] = []
        self._owners: list[str] = []
        self._rng = rng or random.Random()

    def rebuild(self, endpoints: Sequence[Endpoint]) -> None:
        """Place each endpoint by its *id*, not its address: an instance that moves keeps its keys."""
        ring = sorted((key_hash(f"{e.id}#{i}".encode()), e.id) for e in endpoints
                      for i in range(self.vnodes * e.weight))
        self._positions = [h for h, _ in ring]
        self._owners = [owner for _, owner in ring]

    def capacity(self, endpoint: Endpoint, in_flight: int, total_weight: int) -> int:
        """Most calls ``endpoint`` may carry while ``in_flight`` are in flight, this one included."""
        return math.ceil((1 + self.epsilon) * in_flight * endpoint.weight / total_weight)

    def pick(self, candidates: Sequence[Endpoint], key: bytes | None, now: float) -> Endpoint:
        if key is None or not self._owners:
            return candidates[self._rng.randrange(len(candidates))]
        by_id = {e.id: e for e in candidates}
        in_flight = sum(e.outstanding for e in candidates) + 1
        total_weight = sum(e.weight for e in candidates)
        start = bisect.bisect(self._positions, key_hash(key))
        size = len(self._owners)
        for step in range(size):
            endpoint = by_id.get(self._owners[(start + step) % size])
            if endpoint is not None and endpoint.outstanding < self.capacity(endpoint, in_flight, total_weight):
                return endpoint
        # Unreachable while candidates are on the ring (their capacities add up to more than in_flight);
        # an endpoint added since the last rebuild is not, so fall back to the least loaded.
        return min(candidates, key=lambda e: e.outstanding / e.weight)


def make(policy: str | Policy, *, epsilon: float = DEFAULT_EPSILON, rng: random.Random | None = None) -> Policy:
    """A policy by name (``round_robin``, ``p2c``, ``ring_hash``), or the given object."""
    if not isinstance(policy, str):
        return policy
    if policy == "round_robin":
        return RoundRobin(rng)
    if policy == "p2c":
        return P2C(rng)
    if policy == "ring_hash":
        return RingHash(epsilon, rng=rng)
    raise ValueError(f"unknown policy {policy!r}: expected round_robin, p2c or ring_hash")
