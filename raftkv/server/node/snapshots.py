"""Snapshots on both ends: when this member takes one, and what it does with one received from the leader.

Taking: once ``snapshot_count`` entries were applied since the last snapshot (or a peer needs a newer one),
the store records a snapshot at its applied index and compacts the log, as a background writer job; one at
a time. Sending: a SNAP the core emits for a peer that joined after the snapshot was taken would be refused
by it (the snapshot does not list it as a member), so it is held back, a fresh snapshot is taken, and the
core is told the send failed so that it retries with the new one. Receiving: ``StagedSnapshots``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from raftkv.core.types import Message, MessageType, SnapshotMeta
from raftkv.server.node.world import SnapshotInstall, Store

log = logging.getLogger("raftkv.node")


class SnapshotScheduler:
    """Decides when this member snapshots, and holds back snapshots a peer could not use."""

    def __init__(self, name: str, snapshot_count: int, snapshot_index: int) -> None:
        self._name = name
        self._snapshot_count = snapshot_count
        self.snapshot_index = snapshot_index
        self._wanted = False
        self._running = False
        self._failed_sends: set[int] = set()

    def would_start(self, applied: int) -> bool:
        """Whether ``due`` would say yes (it changes nothing)."""
        return not self._running and (applied - self.snapshot_index >= self._snapshot_count or self._wanted)

    def due(self, applied: int) -> bool:
        """Whether to start a snapshot now; if so, the caller runs it and reports ``taken``."""
        if not self.would_start(applied):
            return False
        self._wanted = False
        self._running = True
        return True

    def taken(self, meta: SnapshotMeta) -> None:
        self._running = False
        self.snapshot_index = max(self.snapshot_index, meta.index)
        log.info("%s: snapshot at index %d, log compacted", self._name, meta.index)

    def installed(self, index: int) -> None:
        self.snapshot_index = index
        log.info("%s: installed a snapshot at index %d", self._name, index)

    def usable(self, messages: list[Message]) -> list[Message]:
        """``messages`` without snapshots their receiver would refuse (see the module docstring)."""
        kept = []
        for msg in messages:
            snap = msg.snapshot
            if msg.type == MessageType.SNAP and snap is not None and msg.to not in snap.conf_state.members():
                self._wanted = True
                self._failed_sends.add(msg.to)  # reported to the core next turn, after advance
                continue
            kept.append(msg)
        return kept

    def take_failed_sends(self) -> list[int]:
        failed = sorted(self._failed_sends)
        self._failed_sends.clear()
        return failed


class StagedSnapshots:
    """Snapshot data received from the leader, waiting for the core to accept its SNAP message.

    The transport's sink (``begin``) and source (``open``): received data is staged to a file first (never
    all in memory); the core then decides. If it accepts, ``Ready.snapshot`` names the meta and the node
    installs the staged data in that Ready's transaction; a stale one is discarded when a newer one arrives.
    """

    def __init__(self, store: Store[Any]) -> None:
        self._store = store
        self._staged: dict[tuple[int, int], SnapshotInstall] = {}

    def open(self, meta: SnapshotMeta) -> Iterator[bytes]:
        return self._store.open_snapshot(meta)

    def begin(self, meta: SnapshotMeta) -> StagedWriter:
        for key in [k for k in self._staged if k <= (meta.index, meta.term)]:
            self._staged.pop(key).abort()
        installer = self._store.begin_snapshot_install(meta)
        self._staged[(meta.index, meta.term)] = installer
        return StagedWriter(self, (meta.index, meta.term), installer)

    def take(self, meta: SnapshotMeta) -> SnapshotInstall:
        installer = self._staged.pop((meta.index, meta.term), None)
        assert installer is not None, f"the core accepted snapshot {meta} that was never received"
        return installer

    def discard(self, key: tuple[int, int]) -> None:
        self._staged.pop(key, None)

    def restage(self, old: tuple[int, int], installer: SnapshotInstall) -> tuple[int, int]:
        """The data turned out to be at ``installer.meta`` (newer than announced): file it there."""
        self._staged.pop(old, None)
        key = (installer.meta.index, installer.meta.term)
        for stale in [k for k in self._staged if k <= key]:
            self._staged.pop(stale).abort()
        self._staged[key] = installer
        return key


class StagedWriter:
    """What the transport writes a received snapshot into; ``commit`` just leaves it staged for the core."""

    def __init__(self, owner: StagedSnapshots, key: tuple[int, int], installer: SnapshotInstall) -> None:
        self._owner, self._key, self._installer = owner, key, installer

    def write(self, data: bytes) -> None:
        self._installer.write(data)

    def commit(self) -> SnapshotMeta:
        """Complete: the SNAP message is delivered next, carrying the position the data is at (its header,
        usually newer than the snapshot the leader's core chose), and the core decides whether to install."""
        meta = self._installer.streamed_meta()
        self._key = self._owner.restage(self._key, self._installer)
        return meta

    def abort(self) -> None:
        self._owner.discard(self._key)
        self._installer.abort()
