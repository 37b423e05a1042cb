"""Virtual time: a single event heap keyed by (time, sequence number).

Everything that happens in a simulated run -- a tick, a message delivery, an fsync completing, a fault --
is an event on this heap. The sequence number breaks ties in insertion order, so two runs that schedule
the same events in the same order pop them in the same order: determinism never depends on comparing
callables or on hash order. Every popped event is folded into a running trace hash, which is how tests
prove that one seed always yields one identical run.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(order=True, slots=True)
class _Event:
    time: int
    seq: int
    label: str = field(compare=False)
    action: Callable[[], None] = field(compare=False)


class EventQueue:
    """The simulation's only clock. ``now`` advances exactly when an event is popped."""

    def __init__(self, keep_trace: int = 0) -> None:
        self.now = 0
        self._seq = 0
        self._heap: list[_Event] = []
        self._hash = hashlib.sha256()
        self.events_run = 0
        #: The last ``keep_trace`` labels, for printing what led to a failure.
        self.recent: list[str] = []
        self._keep = keep_trace

    def schedule(self, delay: int, label: str, action: Callable[[], None]) -> None:
        """Run ``action`` ``delay`` time units from now. ``label`` names the event in the trace."""
        assert delay >= 0, f"cannot schedule into the past: {label} delay={delay}"
        self._seq += 1
        heapq.heappush(self._heap, _Event(self.now + delay, self._seq, label, action))

    def run_next(self) -> bool:
        """Pop and run the earliest event; False when nothing is left."""
        if not self._heap:
            return False
        ev = heapq.heappop(self._heap)
        self.now = ev.time
        self.events_run += 1
        line = f"{ev.time} {ev.label}"
        self._hash.update(line.encode())
        self._hash.update(b"\n")
        if self._keep:
            self.recent.append(line)
            if len(self.recent) > 2 * self._keep:
                del self.recent[: -self._keep]
        ev.action()
        return True

    def next_time(self) -> int | None:
        return self._heap[0].time if self._heap else None

    def note(self, line: str) -> None:
        """Fold an observation that is not an event (e.g. a client result) into the trace."""
        self._hash.update(line.encode())
        self._hash.update(b"\n")
        if self._keep:
            self.recent.append(f"{self.now} . {line}")

    def trace_hash(self) -> str:
        return self._hash.hexdigest()
