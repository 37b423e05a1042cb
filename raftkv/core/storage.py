"""The read side of stable storage, as the core sees it.

The driver owns writing (it persists what ``Ready`` hands it); the core only reads back what is durable.
``MemoryStorage`` is the reference implementation used by the simulator and the golden tests; the LMDB
log in ``raftkv.storage`` implements the same protocol for real nodes.
"""

from __future__ import annotations

from typing import Protocol

from raftkv.core.types import ConfState, Entry, HardState, SnapshotMeta


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
