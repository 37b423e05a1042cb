"""The Python heap of a member: how long the cyclic garbage collector stops it, and what it need not scan.

Why this exists: a member holds about a hundred thousand long-lived objects from start-up (modules, gRPC,
protobuf descriptors, the TLS contexts). CPython's full collection walks all of them each time, and it stops
every thread of the member while it does: on a leader under load that was a pause of 25-30 ms every few
seconds, longer than a whole put at c=64. ``settle`` moves what start-up built into the permanent
generation (``gc.freeze``), which collections skip, so a full collection walks only what was made since
(about 3 ms on the same leader). Reference counting still frees frozen objects that are dropped; only a
cycle among them would outlive its use, and start-up garbage is collected just before the freeze.

``CollectorPauses`` counts the pauses, for the metrics page: Go's collector is reported by etcd the same way
(``go_gc_duration_seconds``).
"""

from __future__ import annotations

import gc
import time
from typing import Any


def settle() -> int:
    """Collect what start-up left behind, then exempt every object alive now from later collections.
    Call once the member is serving. Returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class CollectorPauses:
    """Time the cyclic collector held the member, per generation, from ``start`` on (``gc.callbacks``).

    The callback runs on whichever thread triggered the collection, with the GIL held throughout, so two
    collections never overlap and one start time is enough."""

    GENERATIONS = len(gc.get_threshold())  # CPython has three

    def __init__(self) -> None:
        self.seconds = [0.0] * self.GENERATIONS
        self.collections = [0] * self.GENERATIONS
        self._started = 0.0

    def start(self) -> None:
        gc.callbacks.append(self._on_collect)

    def stop(self) -> None:
        if self._on_collect in gc.callbacks:
            gc.callbacks.remove(self._on_collect)

    def total_seconds(self) -> float:
        return sum(self.seconds)

    def _on_collect(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        self.seconds[generation] += time.perf_counter() - self._started
        self.collections[generation] += 1
