"""The Raft log, hard state, snapshot metadata and node identity in LMDB.

Reads (the ``raftkv.core.storage.Storage`` protocol the core calls) use read transactions from any thread.
Writes are plain functions of a :class:`~raftkv.storage.env.WriteTxn` so that the node store can combine
"append entries + hard state + apply committed entries + applied index" into one commit.

The log keeps a *start* position (index, term) below its first stored entry: the point it was compacted
to. It is distinct from the newest snapshot, because the log deliberately keeps some entries older than the
snapshot so slow followers can catch up without a snapshot transfer.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence

from raftkv.core.types import (
    CompactedError,
    ConfState,
    Entry,
    EntryType,
    HardState,
    SnapshotMeta,
    UnavailableError,
)
from raftkv.storage.env import Env, WriteTxn
from raftkv.storage.sealed import SealedTxn
from raftkv.storage.term_runs import TermRuns

_U64 = struct.Struct(">Q")
_ENTRY_HEAD = struct.Struct(">QB")
_HARD_STATE = struct.Struct(">QQQ")
_POSITION = struct.Struct(">QQ")

K_HARD_STATE = b"hard_state"
K_SNAPSHOT = b"snapshot"
K_LOG_START = b"log_start"
K_APPLIED = b"applied"
K_CONF_STATE = b"conf_state"
K_CLUSTER_ID = b"cluster_id"
K_MEMBER_ID = b"member_id"


class IdentityMismatch(Exception):
    """The data directory belongs to another cluster or another member; starting would corrupt both."""


def u64(value: int) -> bytes:
    return _U64.pack(value)


#: What py-lmdb hands back for a value (bytes here: the environment does not ask for buffers).
Buffer = bytes | memoryview


def read_u64(raw: Buffer) -> int:
    return int(_U64.unpack(raw)[0])


def encode_entry(entry: Entry) -> bytes:
    return _ENTRY_HEAD.pack(entry.term, int(entry.type)) + entry.data


def decode_entry(index: int, raw: Buffer) -> Entry:
    term, kind = _ENTRY_HEAD.unpack_from(raw)
    return Entry(term=term, index=index, type=EntryType(kind), data=bytes(raw[_ENTRY_HEAD.size :]))


def encode_conf_state(cs: ConfState) -> bytes:
    voters, learners = sorted(cs.voters), sorted(cs.learners)
    return struct.pack(f">II{len(voters)}Q{len(learners)}Q", len(voters), len(learners), *voters, *learners)


def decode_conf_state(raw: Buffer) -> ConfState:
    nv, nl = struct.unpack_from(">II", raw)
    ids = struct.unpack_from(f">{nv + nl}Q", raw, 8)
    return ConfState(voters=frozenset(ids[:nv]), learners=frozenset(ids[nv:]))


def encode_snapshot_meta(meta: SnapshotMeta) -> bytes:
    return _POSITION.pack(meta.index, meta.term) + encode_conf_state(meta.conf_state)


def decode_snapshot_meta(raw: Buffer) -> SnapshotMeta:
    index, term = _POSITION.unpack_from(raw)
    return SnapshotMeta(index=index, term=term, conf_state=decode_conf_state(raw[_POSITION.size :]))


# --- metadata shared with the applier (it records applied index + conf state in the apply txn) ---------------


def read_applied(txn: SealedTxn, env: Env) -> int:
    raw = txn.get(K_APPLIED, db=env.db("meta"))
    return read_u64(raw) if raw else 0


def read_conf_state(txn: SealedTxn, env: Env) -> ConfState:
    raw = txn.get(K_CONF_STATE, db=env.db("meta"))
    return decode_conf_state(raw) if raw else ConfState()


def write_applied(w: WriteTxn, index: int, conf_state: ConfState) -> None:
    """Record the applied index and the membership in force at it; always together, in the apply txn."""
    meta = w.db("meta")
    w.txn.put(K_APPLIED, u64(index), db=meta)
    w.txn.put(K_CONF_STATE, encode_conf_state(conf_state), db=meta)


class LmdbRaftStorage:
    """The durable Raft log as the core sees it, with the write helpers the node store calls.

    ``first_index``/``last_index`` and the terms of the newest entries are cached in memory and updated by
    commit hooks, so they always describe what is durable (the core calls them very often; they must not
    open a transaction each time).
    """

    def __init__(self, env: Env) -> None:
        self.env = env
        self._lock = threading.Lock()
        with env.read() as txn:
            self._start = self._read_start(txn)
            cur = txn.cursor(db=env.db("log"))
            self._last = read_u64(cur.key()) if cur.last() else self._start[0]
        self._terms = TermRuns.empty_after(self._last)

    # --- Storage protocol ------------------------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        with self.env.read() as txn:
            return self._read_hard_state(txn), read_conf_state(txn, self.env)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        first, last = self.first_index(), self.last_index()
        if lo < first:
            raise CompactedError(f"entries [{lo}, {hi}): index {lo} is compacted (first index {first})")
        if hi > last + 1:
            raise UnavailableError(f"entries [{lo}, {hi}): last index is {last}")
        out: list[Entry] = []
        if lo >= hi:
            return out
        size = 0
        with self.env.read() as txn:
            cur = txn.cursor(db=self.env.db("log"))
            if not cur.set_key(u64(lo)):
                # Compacted by the writer since we read first_index (the cache lags the disk only the other way).
                raise CompactedError(f"entries [{lo}, {hi}): index {lo} was compacted concurrently")
            for key, raw in cur:
                index = read_u64(key)
                if index >= hi:
                    break
                entry = decode_entry(index, raw)
                size += entry.size()
                if out and max_bytes is not None and size > max_bytes:
                    break
                out.append(entry)
        assert out and out[0].index == lo, (lo, hi, out[:1])
        return out

    def term(self, index: int) -> int:
        start_index, start_term = self._start
        if index == start_index:
            return start_term
        if index < start_index:
            raise CompactedError(f"term({index}): compacted (log starts after {start_index})")
        if index > self.last_index():
            raise UnavailableError(f"term({index}): last index is {self.last_index()}")
        if (cached := self._terms.term(index)) is not None:
            return cached
        with self.env.read() as txn:
            raw = txn.get(u64(index), db=self.env.db("log"))
        if raw is None:
            raise CompactedError(f"term({index}): compacted concurrently")
        return int(_ENTRY_HEAD.unpack_from(raw)[0])

    def first_index(self) -> int:
        return self._start[0] + 1

    def last_index(self) -> int:
        return self._last

    def snapshot_meta(self) -> SnapshotMeta:
        with self.env.read() as txn:
            raw = txn.get(K_SNAPSHOT, db=self.env.db("meta"))
        return decode_snapshot_meta(raw) if raw else SnapshotMeta()

    # --- writes (inside a writer txn) ------------------------------------------------------------------------

    def append(self, w: WriteTxn, entries: Sequence[Entry]) -> None:
        """Persist ``entries``; storing index i first discards every stored entry >= i (a new leader's log wins)."""
        if not entries:
            return
        first_new = entries[0].index
        start_index, last = self._bounds_in(w)
        assert first_new > start_index, f"append at {first_new} at or below the compacted start {start_index}"
        assert first_new <= last + 1, f"append at {first_new} leaves a gap after {last}"
        log = w.db("log")
        if first_new <= last:
            cur = w.txn.cursor(db=log)
            if cur.set_range(u64(first_new)):
                while cur.delete():
                    pass
        for expected, entry in enumerate(entries, start=first_new):
            assert entry.index == expected, f"non-contiguous entries: {entry.index} != {expected}"
            # Past the last stored entry (the rest was just cut): appending fills pages instead of splitting them.
            w.txn.put(u64(entry.index), encode_entry(entry), append=True, db=log)
        w.on_commit(lambda: self._publish_append(entries))

    def set_hard_state(self, w: WriteTxn, hs: HardState) -> None:
        w.txn.put(K_HARD_STATE, _HARD_STATE.pack(hs.term, hs.vote, hs.commit), db=w.db("meta"))

    def set_snapshot_meta(self, w: WriteTxn, meta: SnapshotMeta) -> None:
        w.txn.put(K_SNAPSHOT, encode_snapshot_meta(meta), db=w.db("meta"))

    def compact(self, w: WriteTxn, index: int) -> None:
        """Drop entries <= ``index`` (which must be stored); the log then starts after it."""
        start_index, last = self._bounds_in(w)
        if index <= start_index:
            return
        assert index <= last, f"compact({index}) beyond last index {last}"
        log = w.db("log")
        raw = w.txn.get(u64(index), db=log)
        assert raw is not None, f"compact({index}): entry missing"
        term = int(_ENTRY_HEAD.unpack_from(raw)[0])
        cur = w.txn.cursor(db=log)
        positioned = cur.first()
        while positioned and read_u64(cur.key()) <= index:
            positioned = cur.delete() and bool(cur.key())
        self._write_start(w, index, term)

    def reset_to_snapshot(self, w: WriteTxn, meta: SnapshotMeta) -> None:
        """Installing a snapshot: the whole log is discarded and restarts after the snapshot position."""
        w.txn.drop(w.db("log"), delete=False)
        self.set_snapshot_meta(w, meta)
        self._write_start(w, meta.index, meta.term)
        w.on_commit(lambda: self._publish_reset(meta.index))

    def bootstrap(
        self, w: WriteTxn, cluster_id: int, member_id: int, entries: Sequence[Entry]
    ) -> None:
        """A new cluster's member: persist the initial conf-change entries with HardState(term=1, commit=N).

        The caller builds ``entries`` with ``raftkv.core.rawnode.bootstrap_entries`` and applies them in the
        same transaction (see ``NodeStore.bootstrap``).
        """
        assert self._last == 0 and self._start == (0, 0), "bootstrap of a non-empty log"
        self.set_identity(w, cluster_id, member_id)
        self.append(w, entries)
        self.set_hard_state(w, HardState(term=1, vote=0, commit=len(entries)))

    # --- identity --------------------------------------------------------------------------------------------

    def set_identity(self, w: WriteTxn, cluster_id: int, member_id: int) -> None:
        meta = w.db("meta")
        w.txn.put(K_CLUSTER_ID, u64(cluster_id), db=meta)
        w.txn.put(K_MEMBER_ID, u64(member_id), db=meta)

    def identity(self) -> tuple[int, int] | None:
        """(cluster_id, member_id) recorded at bootstrap or join, or None for a fresh data directory."""
        with self.env.read() as txn:
            cid = txn.get(K_CLUSTER_ID, db=self.env.db("meta"))
            mid = txn.get(K_MEMBER_ID, db=self.env.db("meta"))
        if cid is None or mid is None:
            return None
        return read_u64(cid), read_u64(mid)

    def check_identity(self, cluster_id: int, member_id: int) -> None:
        """Refuse a data directory written by another cluster or another member."""
        stored = self.identity()
        if stored is None:
            return
        if stored[0] != cluster_id:
            raise IdentityMismatch(
                f"data dir {self.env.path} belongs to cluster {stored[0]:x}, not {cluster_id:x}"
            )
        if stored[1] != member_id:
            raise IdentityMismatch(
                f"data dir {self.env.path} belongs to member {stored[1]:x}, not {member_id:x}"
            )

    # --- internals -------------------------------------------------------------------------------------------

    def _bounds_in(self, w: WriteTxn) -> tuple[int, int]:
        """(start index, last index) as seen by ``w``, including its own uncommitted changes (the cache is not)."""
        start_index = self._read_start(w.txn)[0]
        cur = w.txn.cursor(db=w.db("log"))
        return start_index, read_u64(cur.key()) if cur.last() else start_index

    def _read_hard_state(self, txn: SealedTxn) -> HardState:
        raw = txn.get(K_HARD_STATE, db=self.env.db("meta"))
        if raw is None:
            return HardState()
        term, vote, commit = _HARD_STATE.unpack(raw)
        return HardState(term=term, vote=vote, commit=commit)

    def start_in(self, txn: SealedTxn) -> tuple[int, int]:
        """(index, term) the log starts after (the snapshot position), as ``txn`` sees it."""
        return self._read_start(txn)

    def _read_start(self, txn: SealedTxn) -> tuple[int, int]:
        raw = txn.get(K_LOG_START, db=self.env.db("meta"))
        return tuple(_POSITION.unpack(raw)) if raw else (0, 0)

    def _write_start(self, w: WriteTxn, index: int, term: int) -> None:
        w.txn.put(K_LOG_START, _POSITION.pack(index, term), db=w.db("meta"))

        def publish() -> None:
            with self._lock:
                self._start = (index, term)
                self._last = max(self._last, index)

        w.on_commit(publish)

    def _publish_append(self, entries: Sequence[Entry]) -> None:
        with self._lock:
            self._last = entries[-1].index
            self._terms = self._terms.after_append(entries)

    def _publish_reset(self, index: int) -> None:
        with self._lock:
            self._last = index
            self._terms = TermRuns.empty_after(index)
