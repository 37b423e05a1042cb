"""A node's simulated disk: what survives a crash, and nothing else.

The fsync boundary is explicit. A ``Ready`` taken from the core is "written but not synced" until its
fsync event fires (see ``node.py``); only then is it applied to ``DurableState.storage``. A crash discards
the in-flight ``Ready`` -- its entries, hard state and the messages that depended on them -- and the node is
rebuilt from this object alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raftkv.core.storage import MemoryStorage
from raftkv.core.types import ConfChange, ConfState, Entry, HardState, Ready
from raftkv.sim.statemachine import KVStateMachine


@dataclass(slots=True)
class DurableState:
    """The synced log and hard state, the applied state machine, and the snapshot bytes that go with
    ``storage.snapshot_meta()`` (the core only knows the snapshot's metadata)."""

    storage: MemoryStorage = field(default_factory=MemoryStorage)
    sm: KVStateMachine = field(default_factory=KVStateMachine)
    snapshot_data: bytes = b""

    def bootstrap(self, entries: list[Entry]) -> None:
        """Persist and apply a new cluster's membership entries (``bootstrap_entries``)."""
        self.storage.append(entries)
        self.storage.set_hard_state(HardState(term=1, commit=len(entries)))
        cs = ConfState(voters=frozenset(ConfChange.decode(e.data).node_id for e in entries))
        self.storage.set_conf_state(cs)
        self.sm.conf_state = cs
        self.sm.applied = len(entries)

    def sync(self, rd: Ready, staged: dict[int, bytes]) -> None:
        """The fsync of ``rd`` completed: make its snapshot, entries and hard state durable, in that order."""
        if rd.snapshot is not None:
            data = staged.pop(rd.snapshot.index)
            self.storage.apply_snapshot(rd.snapshot)
            self.snapshot_data = data
            self.sm = KVStateMachine.decode(data)
            assert self.sm.applied == rd.snapshot.index, "snapshot bytes do not match their metadata"
        self.storage.append(rd.entries)
        if rd.hard_state is not None:
            self.storage.set_hard_state(rd.hard_state)

    def take_snapshot(self) -> None:
        """Snapshot the state machine at its applied index and compact the log up to it."""
        self.storage.compact(self.sm.applied, self.sm.conf_state)
        self.snapshot_data = self.sm.encode()
