"""Everything a node keeps on disk, behind one facade: the node driver talks to nothing else.

Writes are two stages, each a job on the single writer thread: ``save`` persists a Ready (install a snapshot,
append entries, set the hard state) in one transaction, flushed when the Ready must be durable, and ``apply``
applies committed entries and records the applied index and membership in the same transaction as the state
they describe, not flushed: the log holds what it applied, so a power loss that undoes it is repaired by
replaying the log (``raftkv/storage/README.md``). Jobs run in submission order, so an apply always sees what
was saved before it. When applying is cheap, ``save`` takes the committed entries too and does both in one
transaction: one commit per Ready instead of two. Reads (ranges, watch catch-up, hashes, snapshots) use read
transactions from any thread and never wait for the writer.
"""

from __future__ import annotations

import concurrent.futures
import io
import logging
import os
import struct
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, BinaryIO

from raftkv.core.rawnode import bootstrap_entries
from raftkv.core.types import ConfState, Entry, HardState, SnapshotMeta
from raftkv.proto import rpc_pb2
from raftkv.statemachine import applier as applier_mod
from raftkv.statemachine import leases, requests
from raftkv.statemachine.applier import AppliedEntry, Applier, ApplyConfig, Committed
from raftkv.statemachine.auth_store import AuthState
from raftkv.statemachine.etcd_backend import write_etcd_db
from raftkv.statemachine.mvcc import K_COMPACT, K_REVISION, HistoryPage, MvccReader
from raftkv.storage import integrity
from raftkv.storage.env import DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE, SUB_DBS, Env, Writer, WriteTxn
from raftkv.storage.raft_log import (
    K_APPLIED,
    K_CONF_STATE,
    LmdbRaftStorage,
    decode_snapshot_meta,
    encode_snapshot_meta,
    read_applied,
    read_conf_state,
)
from raftkv.storage.sealed import SealedTxn

#: Sub-databases that make up the state machine (what a snapshot carries), plus the meta keys it owns.
#: What the backend quota counts, as etcd counts its bolt buckets: the revision history (etcd's "key" bucket),
#: leases, members, alarms, users and roles, and the exactly-once table. Not the Raft log (etcd keeps it in its
#: WAL, outside the quota), nor the key indexes ``kv`` and ``keyrev`` (etcd keeps its key index in memory).
QUOTA_DBS = ("history", "leases", "lease_keys", "members", "members_removed", "dedup", "alarms", "auth")
#: A snapshot numbers its records by position here: new sub-databases go at the end. The removed members
#: travel with the member records, as etcd's snapshot (its whole backend) carries ``members_removed``: a
#: member that catches up from a snapshot refuses the removed members it never saw removed.
STATE_DBS = ("kv", "keyrev", "history", "leases", "lease_keys", "members", "dedup", "alarms", "meta", "auth",
             "members_removed")
STATE_META_KEYS = (K_REVISION, K_COMPACT, K_APPLIED, K_CONF_STATE)
log = logging.getLogger("raftkv.storage")

SNAP_MAGIC = b"RKVSNAP1"
_RECORD = struct.Struct(">BII")  # db number, key length, value length
_LEN = struct.Struct(">I")
SNAPSHOT_CHUNK = 256 << 10
#: etcd's default for ``--snapshot-catchup-entries`` (the flag reads this).
DEFAULT_SNAPSHOT_CATCHUP_ENTRIES = 5000


class SnapshotFormatError(Exception):
    """Snapshot bytes that are not a raftkv state-machine snapshot (truncated, or another format)."""


#: Data files up to this size are checked whole when a store opens (structure, then every checksum).
DEFAULT_VERIFY_LIMIT_BYTES = 1 << 30


class NodeStore:
    """A member's storage: the Raft log and the state machine in one LMDB environment.

    Opening it checks the data dir first (``raftkv.storage.integrity``): a damaged file raises
    ``CorruptionError`` before anything is served from it, a data dir of the format before checksums is
    migrated, one of a newer format raises ``FormatError``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None,
        *,
        apply_config: ApplyConfig = ApplyConfig(),
        map_size: int = DEFAULT_MAP_SIZE,
        max_map_size: int = DEFAULT_MAX_MAP_SIZE,
        snapshot_catchup_entries: int = DEFAULT_SNAPSHOT_CATCHUP_ENTRIES,
        sync: bool = True,
        verify_limit_bytes: int = DEFAULT_VERIFY_LIMIT_BYTES,
        env: Env | None = None,
        writer: Writer | None = None,
    ) -> None:
        """The LMDB store in ``data_dir``; or, with ``env`` and ``writer`` given (and ``data_dir`` None),
        the same store over another environment: the simulator's in-memory disk. That one has no file for
        the offline structure check, but its records are sealed, migrated and checked by the same code."""
        self.data_dir = None if data_dir is None else Path(data_dir)
        verify = True
        if env is None:
            if self.data_dir is None:
                raise ValueError("an LMDB store needs a data dir")
            db_dir = self.data_dir / "db"
            data_file = db_dir / "data.mdb"
            verify = data_file.exists() and data_file.stat().st_size <= verify_limit_bytes
            if data_file.exists() and not verify:
                log.warning("%s is larger than %d bytes: not checked at start (every record is still checked "
                            "when read)", data_file, verify_limit_bytes)
            if verify:
                integrity.check_structure(db_dir)
            env = Env(db_dir, map_size=map_size, max_map_size=max_map_size, sync=sync)
        self.env = env
        self.writer = writer or Writer(self.env)
        try:
            integrity.prepare_format(self.env, self.writer)
            if verify:
                integrity.check_records(self.env)
            self.log = LmdbRaftStorage(self.env)
        except BaseException:
            self.close()
            raise
        self.applier = Applier(apply_config)
        self.snapshot_catchup_entries = snapshot_catchup_entries

    def close(self) -> None:
        self.writer.close()
        self.env.close()

    # --- lifecycle ------------------------------------------------------------------------------------------

    def bootstrap(
        self, cluster_id: int, member_id: int, members: Sequence[tuple[int, bytes]]
    ) -> list[AppliedEntry]:
        """A new cluster's member: persist ``bootstrap_entries(members)`` (id, MemberContext bytes) with
        HardState(term=1, commit=N) and apply them, all in one commit. Start the RawNode with applied=N."""
        entries = bootstrap_entries(members)

        def job(w: WriteTxn) -> list[AppliedEntry]:
            self.log.bootstrap(w, cluster_id, member_id, entries)
            return self.applier.apply(w, Committed.decode(entries))

        return self.writer.call(job)

    def join(self, cluster_id: int, member_id: int) -> None:
        """A member added to a running cluster: record who we are; everything else comes from the leader."""
        self.writer.call(lambda w: self.log.set_identity(w, cluster_id, member_id))

    def is_initialized(self) -> bool:
        return self.log.identity() is not None

    def check_identity(self, cluster_id: int, member_id: int) -> None:
        """Raises ``IdentityMismatch`` for a data dir of another cluster or member."""
        self.log.check_identity(cluster_id, member_id)

    # --- the write path ---------------------------------------------------------------------------------------

    def save(
        self,
        snapshot_install: SnapshotInstaller | None,
        entries: Sequence[Entry],
        hard_state: HardState | None,
        committed_entries: Committed | Sequence[Entry] = (),
        *,
        durable: bool = True,
    ) -> concurrent.futures.Future[list[AppliedEntry]]:
        """The persist stage: snapshot, entries and hard state in one transaction, followed in the same
        transaction by the apply of ``committed_entries`` (if any; they may include the entries saved here;
        ``Committed`` if the caller decoded them already, as the Raft loop does, else decoded by the job).
        ``durable``: the future resolves only once the transaction survives a power loss; the driver passes
        False only when nothing it does next depends on that (no entries, no term or vote, no snapshot:
        a commit index and applies, which a restart learns again and replays).

        Queued jobs run in submission order, so a later ``apply`` sees everything saved before it, and a
        commit index saved here is on disk no later than the entries applied up to it (restart needs
        applied <= commit; both are in one transaction, so a power loss undoes them together)."""

        def job(w: WriteTxn) -> list[AppliedEntry]:
            self._save_in(w, snapshot_install, entries, hard_state)
            return self._apply_in(w, committed_entries) if committed_entries else []

        return self.writer.submit(job, durable=durable)

    def apply(self, committed_entries: Committed | Sequence[Entry]) -> concurrent.futures.Future[list[AppliedEntry]]:
        """The apply stage alone: apply entries and record the applied index in the same transaction.

        Not flushed: the entries are durable in this member's log before they are handed out to apply (the
        core's contract), so a power loss that undoes this transaction leaves the applied index before
        them, and a restart applies them again, to the same result."""
        return self.writer.submit(lambda w: self._apply_in(w, committed_entries), durable=False)

    def _save_in(
        self,
        w: WriteTxn,
        snapshot_install: SnapshotInstaller | None,
        entries: Sequence[Entry],
        hard_state: HardState | None,
    ) -> None:
        if snapshot_install is not None:
            snapshot_install.install_into(w, self)
        self.log.append(w, entries)
        if hard_state is not None:
            self.log.set_hard_state(w, hard_state)

    def _apply_in(self, w: WriteTxn, committed_entries: Committed | Sequence[Entry]) -> list[AppliedEntry]:
        applied = read_applied(w.txn, w.env)
        return self.applier.apply(w, Committed.of(committed_entries).after(applied))

    # --- read side --------------------------------------------------------------------------------------------

    def applied_index(self) -> int:
        with self.env.read() as txn:
            return read_applied(txn, self.env)

    def conf_state(self) -> ConfState:
        with self.env.read() as txn:
            return read_conf_state(txn, self.env)

    def revision(self) -> int:
        with self.env.read() as txn:
            return MvccReader(self.env, txn).revision()

    def compact_revision(self) -> int:
        with self.env.read() as txn:
            return MvccReader(self.env, txn).compact_revision()

    def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        """Raises ``EtcdException`` (COMPACTED / FUTURE_REV)."""
        with self.env.read() as txn:
            return MvccReader(self.env, txn).range(req)

    def read_only_txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        """Raises ``EtcdException`` as ``range`` does."""
        with self.env.read() as txn:
            return requests.read_only_txn(MvccReader(self.env, txn), req)

    def history_page(
        self, start_rev: int, key: bytes, range_end: bytes, *, prev_kv: bool, max_bytes: int
    ) -> HistoryPage:
        with self.env.read() as txn:
            reader = MvccReader(self.env, txn)
            return reader.history_page(start_rev, key, range_end, prev_kv=prev_kv, max_bytes=max_bytes)

    def hash_kv(self, revision: int = 0) -> tuple[int, int, int]:
        """(hash, compact revision, hashed revision)."""
        with self.env.read() as txn:
            return MvccReader(self.env, txn).hash_kv(revision)

    def lease(self, lease_id: int) -> tuple[leases.Lease, list[bytes]] | None:
        """A lease and its attached keys, or None."""
        with self.env.read() as txn:
            lease = leases.get(txn, self.env, lease_id)
            return None if lease is None else (lease, lease.keys(txn, self.env))

    def leases(self) -> list[leases.Lease]:
        with self.env.read() as txn:
            return leases.all_leases(txn, self.env)

    def auth_state(self) -> AuthState:
        with self.env.read() as txn:
            return self.applier.auth.state(txn, self.env)

    def members(self) -> list[rpc_pb2.Member]:
        with self.env.read() as txn:
            return applier_mod.members(txn, self.env)

    def removed_members(self) -> frozenset[int]:
        with self.env.read() as txn:
            return applier_mod.removed_members(txn, self.env)

    def alarms(self) -> list[rpc_pb2.AlarmMember]:
        with self.env.read() as txn:
            return applier_mod.alarms(txn, self.env)

    # --- sizes, quota, maintenance ----------------------------------------------------------------------------

    def db_size(self) -> int:
        return self.env.file_size()

    def db_size_in_use(self) -> int:
        """Bytes of pages holding data (what etcd reports as dbSizeInUse): the file without its free pages."""
        with self.env.read() as txn:
            return self.env.pages_in_use(txn, SUB_DBS)

    def quota_usage(self) -> int:
        """Bytes the backend quota counts: ``QUOTA_DBS`` (see there for why not the rest)."""
        with self.env.read() as txn:
            return self.env.pages_in_use(txn, QUOTA_DBS, with_overhead=False)

    def defragment(self) -> concurrent.futures.Future[None]:
        """Give the space of deleted and compacted data back to the filesystem, as etcd's defrag does.

        The Raft log is first compacted up to the applied index (a snapshot is recorded there; a follower
        further behind catches up from a snapshot), since it is most of what a store holds after its keys
        were deleted and compacted. Then the data file is rewritten compactly. Crash-safe: the compacted
        copy is written and fsynced beside the live file and atomically renamed over it; a crash before
        the rename leaves the old file intact (and a log compaction already committed, which is harmless).
        """
        self.create_snapshot(keep_entries=0)
        # No write can interleave: this runs on the writer thread. Readers keep going during the copy.
        return self.writer.submit_outside_txn(self.env.compact_file)

    def status(self) -> dict[str, int]:
        with self.env.read() as txn:
            applied = read_applied(txn, self.env)
            reader = MvccReader(self.env, txn)
            revision, compact = reader.revision(), reader.compact_revision()
        return {
            "db_size": self.db_size(),
            "db_size_in_use": self.db_size_in_use(),
            "map_size": self.env.map_size,
            "applied_index": applied,
            "revision": revision,
            "compact_revision": compact,
            "first_index": self.log.first_index(),
            "last_index": self.log.last_index(),
        }

    # --- snapshots --------------------------------------------------------------------------------------------

    def create_snapshot(self, keep_entries: int | None = None) -> concurrent.futures.Future[SnapshotMeta]:
        """Record a snapshot at the applied index (as of the job's transaction, so applies queued earlier
        count) and compact the log, keeping ``keep_entries`` (default ``snapshot_catchup_entries``) entries
        before it so that slightly lagging followers still catch up from the log."""
        keep = self.snapshot_catchup_entries if keep_entries is None else keep_entries

        def job(w: WriteTxn) -> SnapshotMeta:
            applied = read_applied(w.txn, w.env)
            meta = SnapshotMeta(index=applied, term=self._term_in(w, applied), conf_state=read_conf_state(w.txn, w.env))
            self.log.set_snapshot_meta(w, meta)
            self.log.compact(w, applied - keep)
            return meta

        return self.writer.submit(job)

    def _term_in(self, w: WriteTxn, index: int) -> int:
        if index == self.log.first_index() - 1:
            return self.log.term(index)
        raw = w.txn.get(index.to_bytes(8, "big"), db=w.db("log"))
        assert raw is not None, f"no log entry at {index}"
        return int.from_bytes(raw[:8], "big")

    def open_snapshot(self, meta: SnapshotMeta) -> Iterator[bytes]:
        """The state machine as a stream of chunks, from one read transaction (never all in memory).

        The state is usually newer than ``meta`` (the snapshot the core chose to send): applies went on
        since it was taken. So the stream's header names the position of the state it actually carries —
        the applied index, its term and the membership there, read in the same view — and the receiver
        hands the core that position (``SnapshotInstaller.streamed_meta``). Installing a newer state under
        an older position would leave the receiver's applied index beyond its commit index (a restart
        would refuse it) and skip the membership changes in between.
        """
        del meta  # the header is read from the view below
        with self.env.read() as txn:
            buf = bytearray(SNAP_MAGIC)
            header = encode_snapshot_meta(self._view_meta(txn))
            buf += _LEN.pack(len(header)) + header
            for number, name in enumerate(STATE_DBS):
                for key, value in _state_records(txn, self.env, name):
                    buf += _RECORD.pack(number, len(key), len(value))
                    buf += key
                    buf += value
                    if len(buf) >= SNAPSHOT_CHUNK:
                        yield bytes(buf)
                        buf.clear()
            if buf:
                yield bytes(buf)

    def write_etcd_snapshot(self, out: BinaryIO) -> int:
        """The key-value state as etcd's backend database (``etcd_backend``), from one read transaction,
        written to the seekable ``out``; returns its length. What ``Maintenance/Snapshot`` streams."""
        with self.env.read() as txn:
            return write_etcd_db(txn, self.env, read_applied(txn, self.env), out)

    def _view_meta(self, txn: SealedTxn) -> SnapshotMeta:
        """The position of the state machine in a read view: applied index, its term, the membership."""
        applied = read_applied(txn, self.env)
        raw = txn.get(applied.to_bytes(8, "big"), db=self.env.db("log"))
        if raw is not None:
            term = int.from_bytes(raw[:8], "big")
        else:
            start_index, term = self.log.start_in(txn)
            assert start_index == applied, f"applied index {applied} is neither in the log nor its start {start_index}"
        return SnapshotMeta(index=applied, term=term, conf_state=read_conf_state(txn, self.env))

    def begin_snapshot_install(self, meta: SnapshotMeta) -> SnapshotInstaller:
        return SnapshotInstaller(meta, self.data_dir)


def _state_records(txn: SealedTxn, env: Env, name: str) -> Iterator[tuple[bytes, bytes]]:
    if name == "meta":
        for key in STATE_META_KEYS:
            value = txn.get(key, db=env.db("meta"))
            if value is not None:
                yield key, value
        return
    yield from txn.cursor(db=env.db(name)).iternext(keys=True, values=True)


def read_snapshot_meta(fh: IO[bytes]) -> SnapshotMeta:
    """The header of a stream written by ``NodeStore.open_snapshot``; leaves ``fh`` at the first record."""
    if fh.read(len(SNAP_MAGIC)) != SNAP_MAGIC:
        raise SnapshotFormatError("not a raftkv snapshot")
    (hlen,) = _LEN.unpack(_read_exact(fh, _LEN.size))
    return decode_snapshot_meta(_read_exact(fh, hlen))


def read_snapshot_records(fh: IO[bytes]) -> Iterator[tuple[str, bytes, bytes]]:
    """The (sub-db name, key, value) records after the header, up to the end of ``fh``.

    Zero bytes where a record would begin end the records: that is the padding ``Maintenance/Snapshot``
    adds to saved files. No record starts with zeros (LMDB keys are never empty), so anything but zeros
    after that point is corruption.
    """
    while head := fh.read(_RECORD.size):
        if not head.strip(b"\0"):
            while rest := fh.read(SNAPSHOT_CHUNK):
                if rest.strip(b"\0"):
                    raise SnapshotFormatError("data after the snapshot's zero padding")
            return
        if len(head) != _RECORD.size:
            raise SnapshotFormatError("truncated snapshot record")
        number, klen, vlen = _RECORD.unpack(head)
        if number >= len(STATE_DBS):
            raise SnapshotFormatError(f"snapshot record for unknown sub-database {number}")
        yield STATE_DBS[number], _read_exact(fh, klen), _read_exact(fh, vlen)


def _read_exact(fh: IO[bytes], n: int) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise SnapshotFormatError("truncated snapshot")
    return data


class SnapshotInstaller:
    """Receives a snapshot stream into a temporary file; ``NodeStore.save`` then installs it.

    Staging on disk keeps memory flat for large states; the install itself replaces the whole state machine
    and resets the log in the same transaction as the rest of the Ready's save, so it is atomic.
    """

    def __init__(self, meta: SnapshotMeta, data_dir: Path | None) -> None:
        self.meta = meta
        self._file: IO[bytes] = (
            io.BytesIO()
            if data_dir is None
            else tempfile.NamedTemporaryFile(prefix="snap-", suffix=".tmp", dir=data_dir)
        )

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def streamed_meta(self) -> SnapshotMeta:
        """The position the received state is at (its header), once the whole stream is staged; from now
        on this installer installs that position, which the core is to be told instead of the SNAP's."""
        self._file.flush()
        self._file.seek(0)
        self.meta = read_snapshot_meta(self._file)
        self._file.seek(0, io.SEEK_END)
        return self.meta

    def abort(self) -> None:
        self._file.close()

    def install_into(self, w: WriteTxn, store: NodeStore) -> None:
        self._file.flush()
        self._file.seek(0)
        streamed = read_snapshot_meta(self._file)
        if (streamed.index, streamed.term) != (self.meta.index, self.meta.term):
            raise SnapshotFormatError(f"snapshot stream is for {streamed}, expected {self.meta}")
        meta_db = w.db("meta")
        for name in STATE_DBS:
            if name == "meta":
                for key in STATE_META_KEYS:
                    w.txn.delete(key, db=meta_db)
            else:
                w.txn.drop(w.db(name), delete=False)
        for name, key, value in read_snapshot_records(self._file):
            w.txn.put(key, value, db=w.db(name))
        applied = read_applied(w.txn, w.env)
        assert applied == self.meta.index, f"snapshot state at {applied}, its header says {self.meta.index}"
        store.log.reset_to_snapshot(w, self.meta)
        w.on_commit(self._file.close)


