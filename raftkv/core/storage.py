"""The read side of stable storage, as the core sees it.

The driver owns writing (it persists what ``Ready`` hands it); the core only reads back what is durable.
``MemoryStorage`` is the reference implementation used by the simulator and the golden tests; the LMDB
log in ``raftkv.storage`` implements the same protocol for real nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from raftkv.core.types import CompactedError, ConfState, Entry, HardState, SnapshotMeta, UnavailableError


class Storage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]:
        """Hard state, and the membership as of the applied index the driver passes in ``Config.applied``."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi). Always at least one if lo < hi, even if it alone exceeds ``max_bytes``.

        Raises CompactedError if lo <= snapshot index, UnavailableError if hi > last_index() + 1.
        """
        ...

    def term(self, index: int) -> int:
        """Term of the entry at ``index``; valid for snapshot index .. last_index (snapshot term at its index)."""
        ...

    def first_index(self) -> int:
        """Index of the first entry still stored (snapshot index + 1)."""
        ...

    def last_index(self) -> int:
        ...

    def snapshot_meta(self) -> SnapshotMeta:
        """Metadata of the newest snapshot (index 0 / term 0 when there is none)."""
        ...


class MemoryStorage:
    """An in-memory ``Storage`` that also offers the write side a driver needs.

    ``entries[0]`` is a dummy holding the snapshot's index and term, so ``term(snapshot index)`` works and
    the stored log is always ``entries[1:]``. Used by the simulator and the tests; it is as durable as the
    process (the simulator models crashes by keeping the object and discarding the ``RawNode``).
    """

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.conf_state = ConfState()
        self._snapshot = SnapshotMeta()
        self._entries: list[Entry] = [Entry(term=0, index=0)]

    # -- read side (the Storage protocol) --------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self.conf_state

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._entries[0].index
        if lo <= offset:
            raise CompactedError(f"index {lo} is compacted (snapshot at {offset})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries up to {hi - 1} requested, last index is {self.last_index()}")
        out = self._entries[lo - offset : hi - offset]
        return limit_size(out, max_bytes)

    def term(self, index: int) -> int:
        offset = self._entries[0].index
        if index < offset:
            raise CompactedError(f"term of {index} is compacted (snapshot at {offset})")
        if index > self.last_index():
            raise UnavailableError(f"term of {index} requested, last index is {self.last_index()}")
        return self._entries[index - offset].term

    def first_index(self) -> int:
        return self._entries[0].index + 1

    def last_index(self) -> int:
        return self._entries[0].index + len(self._entries) - 1

    def snapshot_meta(self) -> SnapshotMeta:
        return self._snapshot

    # -- write side (what a driver does with a Ready) ---------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append ``entries``; an entry at index i replaces the stored entry i and discards everything after."""
        if not entries:
            return
        first = entries[0].index
        for prev, nxt in zip(entries, entries[1:]):
            assert nxt.index == prev.index + 1, "appended entries must be contiguous"
        assert first <= self.last_index() + 1, f"gap: appending {first} after {self.last_index()}"
        offset = self._entries[0].index
        if entries[-1].index <= offset:
            return  # entirely covered by the snapshot
        if first <= offset:
            entries = entries[offset + 1 - first :]
            first = offset + 1
        del self._entries[first - offset :]
        self._entries.extend(entries)

    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def set_conf_state(self, cs: ConfState) -> None:
        """Record the membership in force after applying a conf change (returned by ``initial_state``)."""
        self.conf_state = cs

    def apply_snapshot(self, meta: SnapshotMeta) -> None:
        """Replace the whole log with a snapshot received from the leader."""
        assert meta.index >= self._snapshot.index, "installing a snapshot older than the current one"
        self._snapshot = meta
        self._entries = [Entry(term=meta.term, index=meta.index)]
        self.conf_state = meta.conf_state
        if self.hard_state.commit < meta.index:
            self.hard_state = HardState(self.hard_state.term, self.hard_state.vote, meta.index)

    def compact(self, index: int, conf_state: ConfState) -> None:
        """Take a snapshot at ``index`` (already applied, with ``conf_state`` in force) and drop entries <= it."""
        offset = self._entries[0].index
        if index <= offset:
            return
        assert index <= self.last_index(), f"compacting {index} beyond last index {self.last_index()}"
        assert index <= self.hard_state.commit, "compacting uncommitted entries"
        term = self.term(index)
        self._snapshot = SnapshotMeta(index=index, term=term, conf_state=conf_state)
        self._entries = [Entry(term=term, index=index)] + self._entries[index - offset + 1 :]


def limit_size(entries: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of ``entries`` within ``max_bytes`` — but never empty if ``entries`` is not."""
    if max_bytes is None or not entries:
        return entries
    total = entries[0].size()
    for i in range(1, len(entries)):
        total += entries[i].size()
        if total > max_bytes:
            return entries[:i]
    return entries
