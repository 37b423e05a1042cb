"""A multi-version key-value store with etcd's semantics, kept in LMDB.

Layout (sub-databases of the node's environment, see ``raftkv/storage/README.md``):

- ``kv``: user key -> the key's live ``mvccpb.KeyValue`` (absent once deleted). Serves latest reads
  without touching history.
- ``keyrev`` (dupsort): user key -> every generation point ``(revision, sub, tombstone)`` still kept, sorted.
  A historical read at revision R takes the newest point <= R.
- ``history``: ``(revision, sub)`` -> ``mvccpb.Event`` (kv only). Ordered by revision, so watch catch-up is a
  sequential scan.
- ``meta``: the current revision and the compaction revision.

Why etcd's rules matter here: clients (etcdctl, watch resumption, compare-and-swap loops) depend on
"one revision per mutating request, none for a no-op", on mod/create revisions and versions, and on
ErrCompacted / ErrFutureRev; they are reproduced exactly. A :class:`MvccWrite` is one request's revision:
all of its puts and deletes share it (with increasing sub-revisions), and the revision is only consumed
if at least one event was recorded.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from raftkv import errors
from raftkv.proto import kv_pb2, rpc_pb2
from raftkv.storage.env import Env, WriteTxn
from raftkv.storage.sealed import SealedTxn

_REV = struct.Struct(">QQ")  # (revision, sub): history key, keyrev value prefix
_POINT = struct.Struct(">QQB")  # (revision, sub, tombstone) in keyrev
_U64 = struct.Struct(">Q")

K_REVISION = b"mvcc_revision"
K_COMPACT = b"mvcc_compact_revision"

PUT = kv_pb2.Event.PUT
DELETE = kv_pb2.Event.DELETE

_SortOrder = rpc_pb2.RangeRequest.SortOrder
_SortTarget = rpc_pb2.RangeRequest.SortTarget
_SORT_KEYS = {
    rpc_pb2.RangeRequest.KEY: lambda kv: kv.key,
    rpc_pb2.RangeRequest.VERSION: lambda kv: kv.version,
    rpc_pb2.RangeRequest.CREATE: lambda kv: kv.create_revision,
    rpc_pb2.RangeRequest.MOD: lambda kv: kv.mod_revision,
    rpc_pb2.RangeRequest.VALUE: lambda kv: kv.value,
}


@dataclass(frozen=True, slots=True)
class KeyRange:
    """etcd's (key, range_end) convention: empty end = one key; end ``\\0`` = every key >= key."""

    key: bytes
    range_end: bytes = b""

    @property
    def single(self) -> bool:
        return not self.range_end

    def contains(self, k: bytes) -> bool:
        if self.single:
            return k == self.key
        if self.range_end == b"\0":
            return k >= self.key
        return self.key <= k < self.range_end

    def past_end(self, k: bytes) -> bool:
        """True once a key scan in ascending order has left the range (asked once per key scanned)."""
        end = self.range_end
        if not end:
            return k != self.key
        return end != b"\0" and k >= end


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One bounded step of a history scan: the matching events, and where the next step starts."""

    revisions: list[tuple[int, list[kv_pb2.Event]]]
    #: First revision not scanned: everything matching below it is in ``revisions``.
    next_revision: int
    #: Bytes of history read (matching or not): what the step cost.
    scanned_bytes: int


def read_revision(txn: SealedTxn, env: Env) -> int:
    """The store's current revision; a fresh store is at revision 1, as in etcd."""
    raw = txn.get(K_REVISION, db=env.db("meta"))
    return int(_U64.unpack(raw)[0]) if raw else 1


def read_compact_revision(txn: SealedTxn, env: Env) -> int:
    raw = txn.get(K_COMPACT, db=env.db("meta"))
    return int(_U64.unpack(raw)[0]) if raw else 0


def _scan(txn: SealedTxn, db: object, rng: KeyRange, *, values: bool = True) -> Iterator[tuple[bytes, bytes]]:
    """Ascending (key, value) pairs of ``db`` inside ``rng`` (one per key for dupsort dbs when values=False)."""
    cur = txn.cursor(db=db)
    if not cur.set_range(rng.key):
        return
    # py-lmdb returns bytes (the environment does not ask for buffers), whatever its annotations allow.
    it: Iterator[Any] = (
        cur.iternext_nodup(keys=True, values=values) if not values else cur.iternext(keys=True, values=True)
    )
    for item in it:
        k, v = (item, b"") if not values else item
        if rng.past_end(k):
            return
        yield k, v


class MvccReader:
    """Read-only queries over one consistent transaction (a read txn, or a write txn seeing its own writes)."""

    def __init__(self, env: Env, txn: SealedTxn) -> None:
        self.env = env
        self.txn = txn
        self._kv = env.db("kv")
        self._keyrev = env.db("keyrev")
        self._history = env.db("history")

    def revision(self) -> int:
        return read_revision(self.txn, self.env)

    def compact_revision(self) -> int:
        return read_compact_revision(self.txn, self.env)

    def get(self, key: bytes) -> kv_pb2.KeyValue | None:
        raw = self.txn.get(key, db=self._kv)
        return kv_pb2.KeyValue.FromString(raw) if raw is not None else None

    def latest(self, rng: KeyRange) -> Iterator[kv_pb2.KeyValue]:
        for _, raw in _scan(self.txn, self._kv, rng):
            yield kv_pb2.KeyValue.FromString(raw)

    def count_latest(self, rng: KeyRange) -> int:
        return sum(1 for _ in _scan(self.txn, self._kv, rng))

    def at(self, rng: KeyRange, rev: int) -> Iterator[kv_pb2.KeyValue]:
        """Keys alive at revision ``rev`` (which must not be compacted), ascending."""
        for key, _ in _scan(self.txn, self._keyrev, rng, values=False):
            point = self._point_before(key, rev + 1, 0)
            if point is not None and not point[2]:
                yield self._history_kv(point[0], point[1])

    def kv_before(self, key: bytes, rev: int, sub: int) -> kv_pb2.KeyValue | None:
        """The key's value just before (rev, sub): the ``prev_kv`` of an event there (None if absent/compacted)."""
        point = self._point_before(key, rev, sub)
        if point is None or point[2]:
            return None
        return self._history_kv(point[0], point[1])

    def _point_before(self, key: bytes, rev: int, sub: int) -> tuple[int, int, int] | None:
        """Newest (revision, sub, tombstone) of ``key`` strictly before (rev, sub)."""
        cur = self.txn.cursor(db=self._keyrev)
        if cur.set_range_dup(key, _REV.pack(rev, sub)):
            found = cur.prev_dup()
        else:
            found = cur.set_key(key) and cur.last_dup()
        if not found:
            return None
        return _POINT.unpack(cur.value())

    def _history_kv(self, rev: int, sub: int) -> kv_pb2.KeyValue:
        raw = self.txn.get(_REV.pack(rev, sub), db=self._history)
        assert raw is not None, f"keyrev points at missing history ({rev}, {sub})"
        return kv_pb2.Event.FromString(raw).kv

    def check_revision(self, rev: int) -> None:
        """etcd's rules for reading at ``rev`` (>0): not after the current revision, not before compaction."""
        if rev > self.revision():
            raise errors.FUTURE_REV.exception()
        if rev < self.compact_revision():
            raise errors.COMPACTED.exception()

    def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        """A RangeRequest with every option, following etcd v3.4's ``applierV3backend.Range``; its shape
        passed ``request_shape.check_range``."""
        current = self.revision()
        rev = current
        if req.revision > 0:
            self.check_revision(req.revision)
            rev = req.revision
        rng = KeyRange(req.key, req.range_end)
        resp = rpc_pb2.RangeResponse()
        resp.header.revision = current
        source = self.latest(rng) if rev == current else self.at(rng, rev)
        if req.count_only:
            resp.count = self.count_latest(rng) if rev == current else sum(1 for _ in source)
            return resp

        sort_order = req.sort_order
        if req.sort_target != rpc_pb2.RangeRequest.KEY and sort_order == rpc_pb2.RangeRequest.NONE:
            sort_order = rpc_pb2.RangeRequest.ASCEND
        filtered = bool(
            req.min_mod_revision or req.max_mod_revision or req.min_create_revision or req.max_create_revision
        )
        presorted = sort_order == rpc_pb2.RangeRequest.NONE or (
            sort_order == rpc_pb2.RangeRequest.ASCEND and req.sort_target == rpc_pb2.RangeRequest.KEY
        )
        # Like etcd: fetch one more than the limit (to know `more`) unless sorting/filtering needs all of them;
        # `count` is always the number of keys in the range, before filters and limit.
        fetch = req.limit + 1 if req.limit > 0 and presorted and not filtered else 0
        kvs: list[kv_pb2.KeyValue] = []
        count = 0
        for kv in source:
            count += 1
            if fetch == 0 or len(kvs) < fetch:
                kvs.append(kv)
            elif rev == current:
                # The rest only counts: scan its keys, without reading (and checking) their values.
                count += sum(1 for _ in _scan(self.txn, self._kv, KeyRange(kv.key, rng.range_end), values=False)) - 1
                break
        if filtered:
            kvs = [kv for kv in kvs if _passes_filters(kv, req)]
        if not presorted:
            kvs.sort(key=_SORT_KEYS[req.sort_target], reverse=sort_order == rpc_pb2.RangeRequest.DESCEND)
        if req.limit > 0 and len(kvs) > req.limit:
            kvs = kvs[: req.limit]
            resp.more = True
        resp.count = count
        for kv in kvs:
            if req.keys_only:
                kv.value = b""
            resp.kvs.append(kv)
        return resp

    def history_page(
        self, start_rev: int, key: bytes, range_end: bytes, *, prev_kv: bool, max_bytes: int
    ) -> HistoryPage:
        """Events of revisions >= ``start_rev`` touching the range, grouped by revision (whole revisions).

        Watch catch-up: one sequential scan of ``history`` from ``start_rev`` that stops at the first
        revision boundary after ``max_bytes`` of history were scanned (matching or not), so one call costs a
        bounded amount whatever the watcher's range. ``prev_kv`` is looked up only when asked for: it costs
        a key-index search per event.
        """
        if start_rev < self.compact_revision():  # etcd serves a watch from exactly the compaction revision
            raise errors.COMPACTED.exception()
        rng = KeyRange(key, range_end)
        out: list[tuple[int, list[kv_pb2.Event]]] = []
        scanned = 0
        cur = self.txn.cursor(db=self._history)
        positioned = cur.set_range(_REV.pack(start_rev, 0))
        last_rev = start_rev - 1
        while positioned:
            rev, sub = _REV.unpack(cur.key())
            if rev != last_rev and scanned >= max_bytes:
                return HistoryPage(out, rev, scanned)
            last_rev = rev
            raw = cur.value()
            scanned += len(raw)
            ev = kv_pb2.Event.FromString(raw)
            if rng.contains(ev.kv.key):
                if prev_kv and (prev := self.kv_before(ev.kv.key, rev, sub)) is not None:
                    ev.prev_kv.CopyFrom(prev)
                if not out or out[-1][0] != rev:
                    out.append((rev, []))
                out[-1][1].append(ev)
            positioned = cur.next()
        return HistoryPage(out, self.revision() + 1, scanned)

    def hash_kv(self, rev: int = 0) -> tuple[int, int, int]:
        """(crc32, compact revision, hashed revision) over every kept history record up to ``rev`` (0 = latest).

        Like etcd's HashKV: replicas that applied the same log agree on it, whatever their physical layout.
        """
        current = self.revision()
        rev = rev if rev > 0 else current
        self.check_revision(rev)
        crc = 0
        cur = self.txn.cursor(db=self._history)
        for hkey, raw in cur:
            if _REV.unpack(hkey)[0] > rev:
                break
            crc = zlib.crc32(raw, zlib.crc32(hkey, crc))
        return crc, self.compact_revision(), rev


def _passes_filters(kv: kv_pb2.KeyValue, req: rpc_pb2.RangeRequest) -> bool:
    return not (
        (req.min_mod_revision and kv.mod_revision < req.min_mod_revision)
        or (req.max_mod_revision and kv.mod_revision > req.max_mod_revision)
        or (req.min_create_revision and kv.create_revision < req.min_create_revision)
        or (req.max_create_revision and kv.create_revision > req.max_create_revision)
    )


class MvccWrite(MvccReader):
    """One mutating request: every change shares revision ``current + 1``; ``finish`` consumes it if used."""

    def __init__(self, w: WriteTxn, revision: int | None = None) -> None:
        """``revision``: the store's current revision, when the caller knows it (the applier carries it
        across a batch); otherwise it is read."""
        MvccReader.__init__(self, w.env, w.txn)
        self.w = w
        self.rev = (self.revision() if revision is None else revision) + 1
        self.sub = 0
        self.events: list[kv_pb2.Event] = []
        self._lease_keys = w.db("lease_keys")

    def put(self, key: bytes, value: bytes, lease: int) -> kv_pb2.KeyValue | None:
        """Write ``key``; returns the previous KeyValue (None if the key did not exist)."""
        prev = self.get(key)
        event = kv_pb2.Event(type=PUT)  # the KeyValue built in place: a keyword copies it in
        kv = event.kv
        kv.key, kv.mod_revision, kv.value, kv.lease = key, self.rev, value, lease
        if prev is None:
            kv.create_revision, kv.version = self.rev, 1
        else:
            kv.create_revision, kv.version = prev.create_revision, prev.version + 1
        self.txn.put(key, kv.SerializeToString(), db=self._kv)
        if prev is not None and prev.lease and prev.lease != lease:
            self.txn.delete(lease_key(prev.lease, key), db=self._lease_keys)
        if lease:
            self.txn.put(lease_key(lease, key), b"", db=self._lease_keys)
        self._record(event, prev)
        return prev

    def delete_range(self, key: bytes, range_end: bytes) -> list[kv_pb2.KeyValue]:
        """Delete every live key in the range; returns their last values. No keys => no event, no revision.

        The records are those ``_record`` writes for each key, written per database in the same order; the
        loop is spelled out because a range can hold every key of the store and it blocks the writer thread
        meanwhile: one cursor walks and deletes the live keys, and the key index and the history each get
        their records in one call."""
        cur = self.txn.cursor(db=self._kv)
        if not cur.set_range(key):
            return []
        rev, sub = self.rev, self.sub
        point, position = _POINT.pack, _REV.pack
        new_event = kv_pb2.Event
        deleted: list[kv_pb2.KeyValue] = []
        points: list[tuple[bytes, bytes]] = []
        history: list[tuple[bytes, bytes]] = []
        for k, raw in cur.pop_until(KeyRange(key, range_end).past_end):
            event = new_event(type=DELETE)  # fields set one by one: a third cheaper than by keywords
            tombstone = event.kv
            tombstone.key, tombstone.mod_revision = k, rev
            points.append((k, point(rev, sub, True)))
            history.append((position(rev, sub), event.SerializeToString()))  # before prev_kv: not stored
            prev = event.prev_kv  # parsed in place rather than parsed and copied in
            prev.ParseFromString(raw)
            if prev.lease:
                self.txn.delete(lease_key(prev.lease, k), db=self._lease_keys)
            self.events.append(event)
            deleted.append(prev)
            sub += 1
        self.txn.put_many(points, db=self._keyrev)
        self.txn.put_many(history, db=self._history, append=True)  # see _record
        self.sub = sub
        return deleted

    def _record(self, event: kv_pb2.Event, prev: kv_pb2.KeyValue | None) -> None:
        tombstone = event.type == DELETE
        self.txn.put(event.kv.key, _POINT.pack(self.rev, self.sub, tombstone), db=self._keyrev)
        # History keys only grow: appending fills pages instead of splitting them half-empty.
        self.txn.put(_REV.pack(self.rev, self.sub), event.SerializeToString(), append=True, db=self._history)
        if prev is not None:
            event.prev_kv.CopyFrom(prev)
        self.events.append(event)
        self.sub += 1

    def finish(self) -> int:
        """Close the request: consume the revision if anything changed. Returns the store's revision after it."""
        if not self.events:
            return self.rev - 1
        self.txn.put(K_REVISION, _U64.pack(self.rev), db=self.env.db("meta"))
        return self.rev

    def compact(self, rev: int) -> None:
        """Forget history before ``rev``: per key keep only the newest point <= rev, unless it is a deletion.

        Compaction is a replicated request but creates no revision (as in etcd).
        """
        if rev <= self.compact_revision():
            raise errors.COMPACTED.exception()
        if rev > self.revision():
            raise errors.FUTURE_REV.exception()
        cur = self.txn.cursor(db=self._keyrev)
        doomed: list[tuple[bytes, bytes]] = []
        for key, _ in _scan(self.txn, self._keyrev, KeyRange(b"\0", b"\0"), values=False):
            cur.set_key(key)
            points: list[bytes] = [p for p in cur.iternext_dup() if _POINT.unpack(p)[0] <= rev]
            if points and not _POINT.unpack(points[-1])[2]:
                points.pop()  # the value visible at `rev` stays readable
            doomed.extend((key, p) for p in points)
        for key, point in doomed:
            self.txn.delete(key, point, db=self._keyrev)
            self.txn.delete(point[: _REV.size], db=self._history)
        self.txn.put(K_COMPACT, _U64.pack(rev), db=self.env.db("meta"))


def lease_id_bytes(lease: int) -> bytes:
    """A lease id (etcd's int64: negative ids are valid) as 8 big-endian two's-complement bytes: the key
    of its ``leases`` record and the prefix of its ``lease_keys`` records."""
    return lease.to_bytes(8, "big", signed=True)


def history_record(revision: int, sub: int, event: kv_pb2.Event) -> tuple[bytes, bytes]:
    """A ``history`` record as ``MvccWrite`` writes it (for building a store from another format)."""
    return _REV.pack(revision, sub), event.SerializeToString()


def history_position(history_key: bytes) -> tuple[int, int]:
    """(revision, sub) of a ``history`` key."""
    revision, sub = _REV.unpack(history_key)
    return int(revision), int(sub)


def keyrev_record(key: bytes, revision: int, sub: int, tombstone: bool) -> tuple[bytes, bytes]:
    """A ``keyrev`` generation point as ``MvccWrite`` writes it."""
    return key, _POINT.pack(revision, sub, tombstone)


def encode_revision(revision: int) -> bytes:
    """The ``meta`` value of ``K_REVISION`` and ``K_COMPACT``."""
    return _U64.pack(revision)


def lease_key(lease: int, key: bytes) -> bytes:
    """``lease_keys`` record: which keys a lease carries, so a revoke finds them without a full scan."""
    return lease_id_bytes(lease) + key


def lease_keys(txn: SealedTxn, env: Env, lease: int) -> list[bytes]:
    prefix = lease_id_bytes(lease)
    cur = txn.cursor(db=env.db("lease_keys"))
    out: list[bytes] = []
    if cur.set_range(prefix):
        for k, _ in cur.iternext():  # the (empty) values carry the keys' checksums
            if not k.startswith(prefix):
                break
            out.append(bytes(k[len(prefix) :]))
    return out
