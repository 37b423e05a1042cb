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

from collections import deque
from collections.abc import Sequence

from raftkv.core.types import Entry

#: Bounds on what is kept: the oldest entries go first.
MAX_BYTES = 4 << 20
MAX_ENTRIES = 8192


class RecentEntries:
    """Contiguous entries ``[first, first + len)``, each equal to the one storage holds at its index."""

    def __init__(self) -> None:
        self._entries: deque[Entry] = deque()
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
        for entry in entries:
            self._entries.append(entry)
            self._bytes += entry.size()
        while len(self._entries) > MAX_ENTRIES or (self._bytes > MAX_BYTES and len(self._entries) > 1):
            self._bytes -= self._entries.popleft().size()
            self._first += 1

    def truncate_from(self, index: int) -> None:
        """Forget entries at ``index`` and after: the log replaces them."""
        while self._entries and self._first + len(self._entries) > index:
            self._bytes -= self._entries.pop().size()
        if not self._entries:
            self._bytes = 0

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def slice(self, lo: int, hi: int) -> list[Entry] | None:
        """Entries ``[lo, hi)`` if all are here, else None."""
        if not self._entries or lo < self._first or hi > self._first + len(self._entries):
            return None
        start = lo - self._first
        return [self._entries[i] for i in range(start, start + hi - lo)]
