"""The simulated network: one fault model per directed link, plus partitions.

Every message gets an independent latency draw, so messages on one link overtake each other (reordering);
a small fraction are delayed much longer (stragglers that arrive after a new leader took over), dropped,
or delivered twice. Partitions are checked both when a message is sent and when it would arrive, so a
partition raised while a message is in flight also cuts it off -- as a real network would.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from raftkv.core.types import Message
from raftkv.sim.clock import EventQueue


@dataclass(frozen=True, slots=True)
class LinkFaults:
    """Fault rates applied to every link. Probabilities are per message."""

    min_latency: int = 1
    max_latency: int = 6
    drop: float = 0.0
    duplicate: float = 0.0
    straggler: float = 0.0  # probability of an extra long delay (reordering across elections)
    straggler_delay: int = 200


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message plus what travels beside it: the snapshot bytes of a SNAP (the core only sees metadata)."""

    msg: Message
    snapshot_data: bytes | None = None


class Network:
    """Delivers envelopes between node ids through the event queue, subject to faults and partitions."""

    def __init__(
        self,
        queue: EventQueue,
        rng: random.Random,
        faults: LinkFaults,
        deliver: Callable[[Envelope], None],
        on_lost: Callable[[Envelope], None],
    ) -> None:
        self._queue = queue
        self._rng = rng
        self.faults = faults
        self._deliver = deliver
        self._on_lost = on_lost
        #: node id -> partition group; nodes absent from the map are in group 0.
        self._group: dict[int, int] = {}
        self._one_way: set[tuple[int, int]] = set()
        self.sent = 0
        self.delivered = 0

    def blocked(self, src: int, dst: int) -> bool:
        return self._group.get(src, 0) != self._group.get(dst, 0) or (src, dst) in self._one_way

    def partition(self, side: frozenset[int]) -> None:
        """Split the cluster in two: ``side`` versus everybody else (symmetric)."""
        self._group = {n: 1 for n in sorted(side)}

    def block_one_way(self, src: int, dst: int) -> None:
        """Drop everything from ``src`` to ``dst`` while ``dst`` can still reach ``src``."""
        self._one_way.add((src, dst))

    def heal(self) -> None:
        self._group = {}
        self._one_way = set()

    def send(self, env: Envelope) -> None:
        msg = env.msg
        self.sent += 1
        f = self.faults
        if self.blocked(msg.sender, msg.to) or (f.drop and self._rng.random() < f.drop):
            self._on_lost(env)
            return
        copies = 2 if f.duplicate and self._rng.random() < f.duplicate else 1
        for _ in range(copies):
            delay = self._rng.randint(f.min_latency, f.max_latency)
            if f.straggler and self._rng.random() < f.straggler:
                delay += self._rng.randint(1, f.straggler_delay)
            label = f"deliver {msg.type.name} {msg.sender}->{msg.to} t{msg.term} i{msg.index}"
            self._queue.schedule(delay, label, lambda env=env: self._arrive(env))

    def _arrive(self, env: Envelope) -> None:
        if self.blocked(env.msg.sender, env.msg.to):
            self._on_lost(env)
            return
        self.delivered += 1
        self._deliver(env)
