"""The Raft log as the state machine sees it: durable entries in ``Storage`` plus an unstable tail.

New entries (and a snapshot received from the leader) live in ``Unstable`` until the driver reports them
persisted (``RawNode.advance``); only then do they count as stable. ``RaftLog`` glues the two together and
holds ``committed`` and ``applied``. All the rules that protect committed data live here: an APP is matched
by (index, term) of its predecessor, and the log is truncated only at the first entry whose term really
differs — so stale, duplicated and reordered APPs never erase anything.
"""

from __future__ import annotations

from collections.abc import Sequence

from raftkv.core.recent import RecentEntries
from raftkv.core.storage import Storage, limit_size
from raftkv.core.types import CompactedError, Entry, SnapshotMeta, StorageError, UnavailableError


class Unstable:
    """Entries (from ``offset``) and possibly a snapshot that are not yet known to be durable."""

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.entries: list[Entry] = []
        self.snapshot: SnapshotMeta | None = None

    def maybe_first_index(self) -> int | None:
        return self.snapshot.index + 1 if self.snapshot else None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        return self.snapshot.index if self.snapshot else None

    def maybe_term(self, index: int) -> int | None:
        if index < self.offset:
            if self.snapshot and self.snapshot.index == index:
                return self.snapshot.term
            return None
        last = self.maybe_last_index()
        if last is None or index > last:
            return None
        return self.entries[index - self.offset].term

    def stable_to(self, index: int, term: int) -> list[Entry]:
        """Entries up to ``index`` were persisted — unless they were replaced meanwhile (term differs).
        Returns the entries that became stable."""
        if self.maybe_term(index) != term or index < self.offset:
            return []
        stabled = self.entries[: index + 1 - self.offset]
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1
        return stabled

    def stable_snapshot_to(self, index: int) -> None:
        if self.snapshot and self.snapshot.index == index:
            self.snapshot = None

    def restore(self, meta: SnapshotMeta) -> None:
        self.offset = meta.index + 1
        self.entries = []
        self.snapshot = meta

    def truncate_and_append(self, entries: Sequence[Entry]) -> None:
        first = entries[0].index
        if first == self.offset + len(self.entries):
            self.entries.extend(entries)
        elif first <= self.offset:
            # Replaces (part of) the stable log too: the driver's append at ``first`` discards stored entries.
            self.offset = first
            self.entries = list(entries)
        else:
            del self.entries[first - self.offset :]
            self.entries.extend(entries)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        assert self.offset <= lo <= hi <= self.offset + len(self.entries), f"unstable slice [{lo},{hi}) out of bounds"
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    """Stable storage + unstable tail, with the commit and apply cursors.

    ``applying`` is how far committed entries have been handed to the driver in a ``Ready`` not yet advanced,
    so the same entries are never handed out twice.
    """

    def __init__(self, storage: Storage, committed: int, applied: int) -> None:
        self.storage = storage
        first, last = storage.first_index(), storage.last_index()
        self.unstable = Unstable(last + 1)
        assert first - 1 <= applied <= committed <= last, (
            f"inconsistent restart point: applied={applied} committed={committed} log=[{first},{last}]"
        )
        self.committed = committed
        self.applied = applied
        self.applying = applied
        #: Stable entries still in memory, so reads of the newest ones need not go to storage.
        self.recent = RecentEntries()

    # -- bounds and terms -------------------------------------------------------------------------------

    def first_index(self) -> int:
        first = self.unstable.maybe_first_index()
        return first if first is not None else self.storage.first_index()

    def last_index(self) -> int:
        last = self.unstable.maybe_last_index()
        return last if last is not None else self.storage.last_index()

    def stable_last_index(self) -> int:
        """Last index known durable (what committed entries may be handed out up to)."""
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot.index - 1  # nothing applicable until the snapshot is installed
        return self.unstable.offset - 1

    def term(self, index: int) -> int:
        """Term of ``index``; raises CompactedError / UnavailableError outside [first_index - 1, last_index]."""
        if index < self.first_index() - 1:
            raise CompactedError(f"index {index} is compacted")
        if index > self.last_index():
            raise UnavailableError(f"index {index} is beyond the last index {self.last_index()}")
        t = self.unstable.maybe_term(index)
        return t if t is not None else self.storage.term(index)

    def term_or_zero(self, index: int) -> int:
        try:
            return self.term(index)
        except StorageError:
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except StorageError:
            return False

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Election restriction: a candidate's log is at least as up to date as ours (Raft §5.4.1)."""
        ours = self.last_term()
        return last_term > ours or (last_term == ours and last_index >= self.last_index())

    # -- reading entries --------------------------------------------------------------------------------

    def entries(self, lo: int, max_bytes: int | None = None, max_count: int | None = None) -> list[Entry]:
        """Entries from ``lo`` to the end, bounded; raises CompactedError if ``lo`` is compacted."""
        hi = self.last_index() + 1
        if max_count is not None:
            hi = min(hi, lo + max_count)
        return self.slice(lo, hi, max_bytes)

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise CompactedError(f"index {lo} is compacted")
        assert hi <= self.last_index() + 1, f"slice [{lo},{hi}) beyond last index {self.last_index()}"
        out: list[Entry] = []
        offset = self.unstable.offset
        if lo < offset:
            stable_hi = min(hi, offset)
            cached = self.recent.slice(lo, stable_hi)
            out = self.storage.entries(lo, stable_hi, max_bytes) if cached is None else limit_size(cached, max_bytes)
            if len(out) < stable_hi - lo:
                return out  # the byte bound was reached within storage
        if hi > offset:
            out = out + self.unstable.slice(max(lo, offset), hi)
        return limit_size(out, max_bytes)

    def all_entries(self) -> list[Entry]:
        return self.slice(self.first_index(), self.last_index() + 1)

    # -- appending --------------------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> int:
        """Append (possibly replacing an uncommitted suffix); returns the new last index."""
        if not entries:
            return self.last_index()
        for prev, nxt in zip(entries, entries[1:]):
            assert nxt.index == prev.index + 1, "log indexes must be contiguous"
        first = entries[0].index
        assert first > self.committed, f"truncating at {first}, at or below commit {self.committed}"
        assert first <= self.last_index() + 1, f"gap: appending {first} after {self.last_index()}"
        self.recent.truncate_from(first)  # stable entries from ``first`` on are being replaced
        self.unstable.truncate_and_append(entries)
        return self.last_index()

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first entry that is new or disagrees in term with ours; 0 if all are already here."""
        for e in entries:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest index <= ``index`` whose term is <= ``term``, and that term (0 if unknown).

        Used on both sides of a rejection so the leader skips a whole divergent term in one round trip.
        """
        while index > 0:
            try:
                ours = self.term(index)
            except StorageError:
                return index, 0
            if ours <= term:
                return index, ours
            index -= 1
        return 0, 0

    def maybe_append(self, index: int, log_term: int, committed: int, entries: Sequence[Entry]) -> int | None:
        """Handle an APP whose predecessor is (``index``, ``log_term``). Returns the last index the APP
        proves we share with the leader, or None when the predecessor does not match (reject).
        """
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            assert conflict > self.committed, (
                f"entry {conflict} conflicts with committed entry (commit {self.committed})"
            )
            self.append(entries[conflict - index - 1 :])
        self.commit_to(min(committed, last_new))
        return last_new

    # -- cursors ----------------------------------------------------------------------------------------

    def commit_to(self, index: int) -> None:
        """Raise the commit index (never lowers it)."""
        if index > self.committed:
            assert index <= self.last_index(), f"commit {index} beyond last index {self.last_index()}"
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Commit ``index`` if it is newer and from ``term`` (a leader only counts its own term's entries)."""
        if index > self.committed and self.term_or_zero(index) == term:
            self.commit_to(index)
            return True
        return False

    def next_committed_entries(self, max_bytes: int | None = None) -> list[Entry]:
        """Committed, durable entries not yet handed out for applying."""
        lo = max(self.applying + 1, self.first_index())
        hi = min(self.committed, self.stable_last_index()) + 1
        if self.unstable.snapshot is not None or lo >= hi:
            return []
        return self.slice(lo, hi, max_bytes)

    def has_next_committed_entries(self) -> bool:
        if self.unstable.snapshot is not None:
            return False
        return min(self.committed, self.stable_last_index()) > max(self.applying, self.first_index() - 1)

    def accept_applying(self, index: int) -> None:
        assert index >= self.applying, "applying cursor went back"
        self.applying = index

    def applied_to(self, index: int) -> None:
        assert self.applied <= index <= self.committed, (
            f"applied {index} out of range [{self.applied}, {self.committed}]"
        )
        self.applied = index
        self.applying = max(self.applying, index)

    def stable_to(self, index: int, term: int) -> None:
        self.recent.add(self.unstable.stable_to(index, term))

    def restore(self, meta: SnapshotMeta) -> None:
        """Replace the log by a snapshot (the follower's log did not contain its last entry)."""
        assert meta.index > self.committed, "restoring a snapshot at or below commit"
        self.recent.clear()
        self.unstable.restore(meta)
        self.committed = meta.index
