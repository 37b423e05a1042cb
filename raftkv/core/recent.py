"""The entries persisted most recently, kept in memory so the log does not read them back from storage.

Once the driver reports entries durable (``RaftLog.stable_to``) they leave ``Unstable``, and every later
read of them — handing them out to apply a turn later, appending them to a follower that was a message
behind — went to ``Storage``: with LMDB a read transaction, a cursor and a decode per entry, on the event
loop's thread, for entries the core held a moment before. etcd avoids the same with its ``MemoryStorage``;
here a bounded tail (``MAX_BYTES``, ``MAX_ENTRIES``) is enough, since the reads that matter are of the newest
entries.

The rule that keeps it right: it holds exactly what storage holds at those indexes. Entries join it only
as they become stable, contiguous with its tail (else it starts again from them); the log drops its tail
from the index a new leader's entries replace (``truncate_from``) and all of it when a snapshot replaces
the log (``clear``). Compaction only removes entries below the log's first index, which the log never asks
for, and the bounds drop the oldest first. A read it cannot serve whole returns None and goes to storage.
"""

from __future__ import annotations

from collections.abc import Sequence

from raftkv.core.types import Entry

#: Bounds on what is kept: the oldest entries go first.
MAX_BYTES = 4 << 20
MAX_ENTRIES = 8192


class RecentEntries:
    """Contiguous entries ``[first, first + len)``, each equal to the one storage holds at its index."""

    def __init__(self) -> None:
        self._entries: list[Entry] = []  # a list, not a deque: slicing one is O(len) where a deque indexes in O(n)
        self._first = 0
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entries: Sequence[Entry]) -> None:
        """``entries`` (contiguous) were just persisted, replacing whatever storage held from their first index."""
        if not entries:
            return
        start = entries[0].index
        if not self._entries or start < self._first or start > self._first + len(self._entries):
            self.clear()
            self._first = start
        else:
            self.truncate_from(start)
        self._entries.extend(entries)
        self._bytes += sum(entry.size() for entry in entries)
        drop = 0
        while len(self._entries) - drop > MAX_ENTRIES or (self._bytes > MAX_BYTES and len(self._entries) - drop > 1):
            self._bytes -= self._entries[drop].size()
            drop += 1
        if drop:
            del self._entries[:drop]
            self._first += drop

    def truncate_from(self, index: int) -> None:
        """Forget entries at ``index`` and after: the log replaces them."""
        keep = max(0, index - self._first)
        if keep < len(self._entries):
            self._bytes -= sum(entry.size() for entry in self._entries[keep:])
            del self._entries[keep:]

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def slice(self, lo: int, hi: int) -> list[Entry] | None:
        """Entries ``[lo, hi)`` if all are here, else None."""
        if not self._entries or lo < self._first or hi > self._first + len(self._entries):
            return None
        return self._entries[lo - self._first : hi - self._first]
