"""The log's in-memory tail of stable entries (``core/recent.py``) answers exactly what storage would.

A driver is played at random — appends that may replace an uncommitted suffix (a new leader's entries),
persisting what is unstable, commits, compactions, snapshots — and after every step each slice of the log,
with and without a byte bound, equals the one stitched from storage and the unstable tail alone."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.core import recent
from raftkv.core.log import RaftLog
from raftkv.core.storage import MemoryStorage, limit_size
from raftkv.core.types import ConfState, Entry, HardState, SnapshotMeta

Step = tuple[str, int, int]
STEPS = st.lists(st.tuples(st.sampled_from(["append", "append", "persist", "persist", "commit", "compact",
                                             "snapshot"]), st.integers(0, 6), st.integers(1, 4)), max_size=40)


def _expected(log: RaftLog, storage: MemoryStorage, lo: int, hi: int, max_bytes: int | None) -> list[Entry]:
    offset = log.unstable.offset
    out = storage.entries(lo, min(hi, offset)) if lo < offset else []
    if hi > offset:
        out = out + log.unstable.slice(max(lo, offset), hi)
    return limit_size(out, max_bytes)


def _play(log: RaftLog, storage: MemoryStorage, step: Step, term: list[int]) -> None:
    kind, a, b = step
    if kind == "append":
        first = max(log.committed + 1, log.last_index() + 1 - a)  # a > 0 replaces an uncommitted suffix
        term[0] += a > 0
        log.append([Entry(term=term[0], index=first + i, data=b"%d/%d" % (term[0], first + i)) for i in range(b)])
    elif kind == "persist" and log.unstable.entries:
        storage.append(log.unstable.entries)
        last = log.unstable.entries[-1]
        log.stable_to(last.index, last.term)
    elif kind == "commit":
        log.commit_to(min(log.committed + b, log.stable_last_index()))
        storage.set_hard_state(HardState(term=term[0], commit=log.committed))  # a driver saves it
    elif kind == "compact" and log.committed > storage.first_index() + a:
        storage.compact(log.committed - a, ConfState(voters=frozenset({1})))
    elif kind == "snapshot":
        meta = SnapshotMeta(index=log.last_index() + b, term=term[0] + 1, conf_state=ConfState(voters=frozenset({1})))
        term[0] += 1
        log.restore(meta)
        storage.apply_snapshot(meta)
        log.unstable.stable_snapshot_to(meta.index)


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_every_slice_equals_the_one_storage_gives(steps: list[Step]) -> None:
    storage = MemoryStorage()
    log = RaftLog(storage, 0, 0)
    term = [1]
    for step in steps:
        _play(log, storage, step, term)
        first, last = log.first_index(), log.last_index()
        for lo in range(first, last + 1):
            for hi in range(lo + 1, last + 2):
                for max_bytes in (None, 1, 12):
                    assert log.slice(lo, hi, max_bytes) == _expected(log, storage, lo, hi, max_bytes), (step, lo, hi)


def test_it_keeps_the_newest_entries_within_its_bounds() -> None:
    tail = recent.RecentEntries()
    tail.add([Entry(term=1, index=i, data=b"x") for i in range(1, recent.MAX_ENTRIES + 11)])
    assert len(tail) == recent.MAX_ENTRIES
    assert tail.slice(1, 2) is None and tail.slice(11, 13) is not None
    big = b"y" * (recent.MAX_BYTES // 2 + 1)
    tail.add([Entry(term=1, index=recent.MAX_ENTRIES + 11 + i, data=big) for i in range(3)])
    assert len(tail) == 1  # the newest one stays even above the byte bound
    tail.add([Entry(term=2, index=5, data=b"z")])  # not contiguous: starts again from it
    assert len(tail) == 1 and tail.slice(5, 6) == [Entry(term=2, index=5, data=b"z")]
