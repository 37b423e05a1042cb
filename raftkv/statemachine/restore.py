"""A new cluster's data directory from a saved snapshot file (``kvctl snapshot restore``, as etcdctl's).

A saved file is what ``Maintenance/Snapshot`` streams, then the SHA-256 of everything before it: etcd's
backend database (``etcd_backend``; what etcd streams too, so an etcd cluster's snapshot restores into raftkv),
or, from raftkv before it streamed that, the ``NodeStore.open_snapshot`` stream padded with zero bytes to a
multiple of 512. Restoring keeps the key-value state
(revision, history, compaction point, leases) and users and roles as etcd keeps them, and replaces
everything that belonged to the old cluster:

- membership: the new member list is bootstrapped exactly as ``NodeStore.bootstrap`` does for a brand-new
  cluster (the log holds one ADD_VOTER entry per member, applied in the same commit), so a member started
  on the directory with the same ``--initial-cluster`` flags finds its identity and carries on;
- the exactly-once table and alarms: both are keyed by the old cluster's client and member ids;
- the removed members: ids of the old cluster's (etcd's restore empties ``members_removed`` too).

The directory is built beside its destination and renamed into place, so an interrupted restore leaves
either nothing or a complete directory, never one a member would start from half-written.
"""

from __future__ import annotations

import hashlib
import io
import mmap
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from google.protobuf.message import DecodeError

from raftkv.core.rawnode import bootstrap_entries
from raftkv.statemachine.applier import Committed
from raftkv.statemachine.etcd_backend import EtcdBackendError, read_etcd_db
from raftkv.statemachine.mvcc import K_COMPACT, K_REVISION
from raftkv.statemachine.node_store import (
    SNAP_MAGIC,
    STATE_DBS,
    STATE_META_KEYS,
    NodeStore,
    SnapshotFormatError,
    read_snapshot_meta,
    read_snapshot_records,
)
from raftkv.storage.bbolt import BoltFormatError
from raftkv.storage.env import WriteTxn

#: Saved snapshots end with the SHA-256 of the stream and its padding.
HASH_BYTES = 32
#: ... and the stream is padded to whole pages of this size (see ``raftkv.api.maintenance``).
PAGE_BYTES = 512
#: State kept from the old cluster; the rest (members, removed members, dedup, alarms, applied index) is the
#: old cluster's.
KEPT_DBS = frozenset({"kv", "keyrev", "history", "leases", "lease_keys", "auth"})
KEPT_META_KEYS = frozenset({K_REVISION, K_COMPACT})
_READ_CHUNK = 1 << 20

assert KEPT_DBS <= set(STATE_DBS) and KEPT_META_KEYS <= set(STATE_META_KEYS)


class RestoreError(Exception):
    """The snapshot file cannot be restored (missing, corrupt, not a snapshot) or the target exists."""


def restore_snapshot(
    file: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    cluster_id: int,
    member_id: int,
    members: Sequence[tuple[int, bytes]],
) -> int:
    """Build ``data_dir`` for member ``member_id`` of a new cluster holding the snapshot's key-value state.

    ``members`` is what ``NodeStore.bootstrap`` takes: (member id, ``MemberContext`` bytes) of every founding
    member, in ``--initial-cluster`` order. Returns the restored store's revision.
    Raises ``RestoreError`` with a one-line reason.
    """
    assert any(mid == member_id for mid, _ in members), f"member {member_id:x} is not among the new members"
    source, target = Path(file), Path(data_dir)
    if target.exists() and any(target.iterdir()):
        raise RestoreError(f"data dir {target} already exists and is not empty")
    try:
        snapshot = open(source, "rb")
    except OSError as exc:
        raise RestoreError(f"cannot read snapshot file {source}: {exc.strerror}") from None
    with snapshot:
        length = _verify(snapshot, source)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.restore-", dir=target.parent))
        try:
            revision = _build(snapshot, length, staging, cluster_id, member_id, members)
            if target.exists():
                target.rmdir()
            os.replace(staging, target)
        except SnapshotFormatError as exc:
            raise RestoreError(f"snapshot file {source} is damaged: {exc}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return revision


def _verify(snapshot: IO[bytes], source: Path) -> int:
    """Check the trailing SHA-256; returns the length of the stream (with its padding) before it."""
    size = os.fstat(snapshot.fileno()).st_size
    if size < HASH_BYTES or (size - HASH_BYTES) % PAGE_BYTES:
        raise RestoreError(
            f"snapshot file {source} is not a saved snapshot ({size} bytes: expected 512-byte pages and a "
            "SHA-256; was it copied completely?)"
        )
    length = size - HASH_BYTES
    digest = hashlib.sha256()
    remaining = length
    while remaining:
        chunk = snapshot.read(min(_READ_CHUNK, remaining))
        assert chunk, f"{source} shrank while being read"
        digest.update(chunk)
        remaining -= len(chunk)
    if snapshot.read(HASH_BYTES) != digest.digest():
        raise RestoreError(f"snapshot file {source} is corrupt: its SHA-256 does not match its contents")
    return length


def _build(
    snapshot: IO[bytes],
    length: int,
    data_dir: Path,
    cluster_id: int,
    member_id: int,
    members: Sequence[tuple[int, bytes]],
) -> int:
    """One commit: the kept state, then the new cluster's bootstrap entries applied on top of it.

    The job reads the file from the start each time it runs: the writer re-runs a job after growing a full map.
    """
    store = NodeStore(data_dir)
    try:
        def job(w: WriteTxn) -> int:
            for name, key, value in _records(snapshot, length):
                kept = key in KEPT_META_KEYS if name == "meta" else name in KEPT_DBS
                if kept:
                    w.txn.put(key, value, db=w.db(name))
            entries = bootstrap_entries(members)
            store.log.bootstrap(w, cluster_id, member_id, entries)
            applied = store.applier.apply(w, Committed.decode(entries))
            return applied[-1].revision

        return store.writer.call(job)
    finally:
        store.close()


def _records(snapshot: IO[bytes], length: int) -> Iterator[tuple[str, bytes, bytes]]:
    """The state-machine records of either format: raftkv's stream, or etcd's backend database (what
    ``etcdctl snapshot save`` writes, and what raftkv's Snapshot RPC streams)."""
    snapshot.seek(0)
    if snapshot.read(len(SNAP_MAGIC)) == SNAP_MAGIC:
        snapshot.seek(0)
        stream = io.BufferedReader(_Bounded(snapshot, length), buffer_size=_READ_CHUNK)
        read_snapshot_meta(stream)  # the old cluster's log position means nothing to the new one
        yield from read_snapshot_records(stream)
        return
    # Mapped, not read: an etcd database may be large. The mapping is left to the garbage collector:
    # the reader's views of it may outlive this frame (in a traceback, for one).
    view = mmap.mmap(snapshot.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        yield from read_etcd_db(memoryview(view)[:length])
    except (BoltFormatError, EtcdBackendError, DecodeError, struct.error) as exc:
        raise SnapshotFormatError(f"neither a raftkv nor an etcd snapshot ({exc})") from None


class _Bounded(io.RawIOBase):
    """The first ``limit`` bytes of a file: the snapshot stream without the hash that follows it."""

    def __init__(self, fh: IO[bytes], limit: int) -> None:
        super().__init__()
        self._fh, self._left = fh, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._fh.read(min(len(buffer), self._left))
        buffer[: len(data)] = data
        self._left -= len(data)
        return len(data)
