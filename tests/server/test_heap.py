"""The collector's pauses are counted, and ``settle`` leaves start-up's objects out of later collections."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from raftkv.server.heap import CollectorPauses, settle


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_each_collection_is_counted_with_its_generation() -> None:
    pauses = CollectorPauses()
    pauses.start()
    try:
        gc.collect(0)
        gc.collect(2)
        gc.collect(2)
    finally:
        pauses.stop()
    assert pauses.collections[2] >= 2 and pauses.collections[0] >= 1
    assert pauses.seconds[2] > 0 and pauses.total_seconds() >= pauses.seconds[2]
    counted = list(pauses.collections)
    gc.collect(2)
    assert pauses.collections == counted


def test_settle_freezes_what_exists_and_collects_garbage_first(unfrozen: None) -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the cyclic collector frees it

    garbage = Node()
    gone = weakref.ref(garbage)
    del garbage
    kept = [Node() for _ in range(10)]
    frozen = settle()
    assert frozen == gc.get_freeze_count() > len(kept)
    # The cycle that was already garbage was collected, not frozen ...
    assert gone() is None
    # ... and what was alive is in no generation a collection walks (gc.get_objects lists those).
    walked = {id(obj) for obj in gc.get_objects()}
    assert not any(id(node) in walked for node in kept)
