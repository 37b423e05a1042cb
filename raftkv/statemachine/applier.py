"""Applies committed log entries to the state machine, inside the caller's LMDB write transaction.

Every replica runs this on the same entries in the same order, so everything here is deterministic: no
clock, no randomness, no local file sizes. The applied index and the membership are written in the same
transaction as the effects, so after a crash the store is exactly "all entries up to applied, none after".

Exactly-once: a request carrying ``(client_id, seq)`` is applied once; a retry that was already applied
gets the stored original ``ApplyResult`` back (the last ``dedup_window`` per client are kept).

The apply is total: whatever bytes a committed entry holds, every member reaches the same result and the
same state, and none raises. A request entry goes through one pipeline (``_apply_request``):

1. **decode** — bytes that are not an ``InternalRequest`` become the MALFORMED_REQUEST result (decoded
   once, by ``Committed``, before the apply: the Raft loop decodes a Ready's entries to tell a bounded apply);
2. **check** — ``request_shape.check_request``, the same rules the API applied before proposing;
3. **apply** — in a nested LMDB transaction, so that a refusal (an ``EtcdException``) or a defect (any
   other exception a request provokes: a bug, deterministic on every member running this code) is rolled
   back and leaves nothing but its error result. Failures of the machine itself (a full map, a disk
   error, memory) are not the request's doing and may differ between members, so they are never turned
   into results: they propagate and the member stops, as for any failed write.

Each entry that fails to decode or to apply is logged once, when its result is durable.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lmdb
from google.protobuf.message import DecodeError

from raftkv import errors
from raftkv.core import confchange
from raftkv.core.types import ConfChange, ConfChangeType, ConfState, Entry, EntryType
from raftkv.proto import internal_pb2, kv_pb2, rpc_pb2
from raftkv.statemachine import auth_store, authorize, leases, request_shape, requests
from raftkv.statemachine.mvcc import MvccWrite, read_revision
from raftkv.storage.env import Env, StorageFull, WriteTxn
from raftkv.storage.raft_log import read_applied, read_conf_state, write_applied
from raftkv.storage.sealed import CorruptionError, SealedTxn

log = logging.getLogger(__name__)

#: Exceptions that come from the machine, not from the request: never an entry's result (see above). Damaged
#: data is this member's alone: answering with an error where the others succeed would make it diverge.
_MACHINE_FAILURES: tuple[type[BaseException], ...] = (StorageFull, OSError, MemoryError, CorruptionError)

_DEDUP = struct.Struct(">QQ")
_ALARM = struct.Struct(">QI")

#: Requests refused while the NOSPACE alarm is raised: those that can add data (etcd's quota applier).
ADDS_DATA = frozenset({"put", "txn", "lease_grant"})


@dataclass(frozen=True, slots=True)
class AppliedEntry:
    """The outcome of one committed entry, for the driver (wake the proposer) and the watch hub (events)."""

    index: int
    request_id: int  # InternalRequest.header.id; 0 for empty and conf-change entries
    result: internal_pb2.ApplyResult | None  # None for empty and conf-change entries
    events: tuple[kv_pb2.Event, ...]
    revision: int  # the store's revision after this entry
    conf_change: ConfChange | None = None


@dataclass(frozen=True, slots=True)
class ApplyConfig:
    #: Seconds a grant is raised to; members pass ``raftkv.server.lessor.min_lease_ttl`` of their election
    #: timeout (the one rule). 0, for a store used on its own, raises nothing.
    min_lease_ttl: int = 0
    dedup_window: int = 64  # remembered results per client


#: Requests whose apply touches a handful of keys whatever the data: safe to run inside a transaction the
#: Raft loop waits for. Deleting a range, compacting, revoking a lease (its keys) or a txn with such an
#: operation can take seconds on a big store, so those are applied in a job of their own.
_BOUNDED_REQUESTS = frozenset(
    {"put", "request_put", "lease_grant", "alarm", "publish_member", "member_update", "lease_checkpoint",
     *auth_store.AUTH_REQUESTS}
)


@dataclass(frozen=True, slots=True)
class Committed:
    """Committed entries with the request each one carries, decoded once.

    The Raft loop decodes a Ready's committed entries to learn whether their apply is bounded and hands
    them to the writer thread, which applies them from that same decode (``Applier.apply``): parsing a
    request is a share of every apply, not worth paying twice. The requests are read, never changed, by the
    apply (the writer may run a job again, after growing a full map)."""

    entries: Sequence[Entry]
    #: Per entry: the request it carries; None for one that carries none (the leader's empty entry, a
    #: conf change) or bytes that are not a request (its result is MALFORMED_REQUEST).
    requests: Sequence[internal_pb2.InternalRequest | None]

    @classmethod
    def decode(cls, entries: Sequence[Entry]) -> Committed:
        return cls(entries, [decode_request(e.data) if e.type == EntryType.NORMAL and e.data else None
                             for e in entries])

    @classmethod
    def of(cls, entries: Committed | Sequence[Entry]) -> Committed:
        """``entries`` as they are if decoded already, else decoded now."""
        return entries if isinstance(entries, Committed) else cls.decode(entries)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def last_index(self) -> int:
        return self.entries[-1].index

    def after(self, applied: int) -> Committed:
        """Only the entries past ``applied`` (some of a Ready's may be in a snapshot installed just before)."""
        if not self.entries or self.entries[0].index > applied:
            return self
        kept = [(e, r) for e, r in zip(self.entries, self.requests) if e.index > applied]
        return Committed([e for e, _ in kept], [r for _, r in kept])

    def bounded(self) -> bool:
        """Whether applying them costs a bounded amount per entry (no range deletes, compactions or lease
        revokes), so it may share the transaction that persists a Ready without stalling the Raft loop."""
        for request in self.requests:
            if request is None:
                continue  # the leader's empty entry; a conf change (one member record); or an error result
            kind = request.WhichOneof("request")
            if kind is not None and not _is_bounded(kind, getattr(request, kind)):
                return False
        return True


def decode_request(data: bytes) -> internal_pb2.InternalRequest | None:
    """The request an entry carries, or None for bytes that are not one (its result is MALFORMED_REQUEST)."""
    try:
        return internal_pb2.InternalRequest.FromString(data)
    except DecodeError:
        return None


def _is_bounded(kind: str, body: Any) -> bool:
    """``kind`` names the request, as an ``InternalRequest`` or a txn's ``RequestOp`` field does."""
    if kind in ("txn", "request_txn"):
        return all(_op_is_bounded(op) for op in (*body.success, *body.failure))
    if kind in ("delete_range", "request_delete_range", "request_range"):
        return not body.range_end
    return kind in _BOUNDED_REQUESTS


def _op_is_bounded(op: rpc_pb2.RequestOp) -> bool:
    kind = op.WhichOneof("request")
    return kind is None or _is_bounded(kind, getattr(op, kind))


def _member_key(member_id: int) -> bytes:
    return member_id.to_bytes(8, "big")


def members(txn: SealedTxn, env: Env) -> list[rpc_pb2.Member]:
    return [rpc_pb2.Member.FromString(raw) for _, raw in txn.cursor(db=env.db("members"))]


def removed_members(txn: SealedTxn, env: Env) -> frozenset[int]:
    """The ids of the members removed from the cluster (and not added back since): what etcd keeps in its
    ``members_removed`` bucket. A member refuses their peer traffic (``Membership.is_removed``)."""
    return frozenset(int.from_bytes(key, "big") for key, _ in txn.cursor(db=env.db("members_removed")))


def alarms(txn: SealedTxn, env: Env) -> list[rpc_pb2.AlarmMember]:
    out = []
    for key, _ in txn.cursor(db=env.db("alarms")):  # the (empty) values carry the keys' checksums
        member_id, alarm = _ALARM.unpack(key)
        out.append(rpc_pb2.AlarmMember(memberID=member_id, alarm=alarm))
    return out


class Applier:
    def __init__(self, config: ApplyConfig = ApplyConfig()) -> None:
        self.config = config
        self.auth = auth_store.AuthReader()
        #: Whether a NOSPACE alarm is raised, read once per batch (None: not read yet). Only an alarm
        #: request changes the alarms within a batch, and it resets this; a batch starts without it.
        self._nospace_raised: bool | None = None
        #: The auth state, likewise read once per batch (None: not read yet); an auth request resets it.
        self._auth_state: auth_store.AuthState | None = None

    def apply(self, w: WriteTxn, committed: Committed) -> list[AppliedEntry]:
        """Apply ``committed`` (contiguous, starting right after the applied index) and record the new position."""
        entries = committed.entries
        if not entries:
            return []
        applied = read_applied(w.txn, w.env)
        assert entries[0].index == applied + 1, f"apply gap: applied {applied}, next entry {entries[0].index}"
        conf_state = read_conf_state(w.txn, w.env)
        self._nospace_raised = None
        self._auth_state = None
        # The store's revision, read once and carried from entry to entry: only a request's MvccWrite
        # moves it, and it reports where it left it (``_apply_request``).
        revision = read_revision(w.txn, w.env)
        out: list[AppliedEntry] = []
        for entry, req in zip(entries, committed.requests):
            if entry.type == EntryType.CONF_CHANGE:
                cc = ConfChange.decode(entry.data)
                # The core's rule, the only one: a change it refuses changes neither configuration nor records.
                if confchange.validate(conf_state, cc) is None:
                    conf_state = confchange.apply(conf_state, cc)
                    self._apply_member_change(w, cc, conf_state)
                out.append(AppliedEntry(entry.index, 0, None, (), revision, cc))
            elif not entry.data:
                out.append(AppliedEntry(entry.index, 0, None, (), revision))
            else:
                outcome = self._apply_request(w, entry, req, revision)
                revision = outcome.revision
                out.append(outcome)
        write_applied(w, entries[-1].index, conf_state)
        return out

    # --- requests --------------------------------------------------------------------------------------------

    def _apply_request(
        self, w: WriteTxn, entry: Entry, req: internal_pb2.InternalRequest | None, current: int
    ) -> AppliedEntry:
        """decode (``req``, done by ``Committed``) -> check -> apply (see the module docstring); the result is
        stored for retries. ``current``: the store's revision before the entry."""
        if req is None:
            w.on_commit(lambda: log.warning("entry %d holds no decodable request (%d bytes): answered %r",
                                            entry.index, len(entry.data), errors.MALFORMED_REQUEST.message))
            result = internal_pb2.ApplyResult(error=errors.MALFORMED_REQUEST.message)
            return AppliedEntry(entry.index, 0, result, (), current)
        header = req.header
        dedup_key = _DEDUP.pack(header.client_id, header.seq) if header.client_id else None
        if dedup_key is not None:
            stored = w.txn.get(dedup_key, db=w.db("dedup"))
            if stored is not None:
                result = internal_pb2.ApplyResult.FromString(stored)
                return AppliedEntry(entry.index, header.id, result, (), current)
        result = internal_pb2.ApplyResult()
        events: list[kv_pb2.Event] = []
        revision = current  # unless the request is applied (a refused one is rolled back)
        try:
            request_shape.check_request(req)
            events, revision = self._apply_nested(w, req, entry.index, result, current)
        except errors.EtcdException as exc:
            result.Clear()
            result.error = exc.error.message
        except _MACHINE_FAILURES:
            raise
        except lmdb.Error as exc:
            if not isinstance(exc, lmdb.BadValsizeError):  # the one LMDB error a request's bytes decide
                raise
            self._defect(w, entry.index, req, exc, result)
        except Exception as exc:  # noqa: BLE001 - a defect, the same on every member: an error result
            self._defect(w, entry.index, req, exc, result)
        response_field = req.WhichOneof("request")
        if not result.error and response_field is not None:
            getattr(result, response_field).header.revision = revision
        if dedup_key is not None:
            self._remember(w, header.client_id, header.seq, result)
        return AppliedEntry(entry.index, header.id, result, tuple(events), revision)

    def _apply_nested(
        self,
        w: WriteTxn,
        req: internal_pb2.InternalRequest,
        index: int,
        result: internal_pb2.ApplyResult,
        current: int,
    ) -> tuple[list[kv_pb2.Event], int]:
        """Apply in a child transaction: committed into ``w`` on success, discarded if anything raises.
        Returns the events and the store's revision after the request."""
        with w.nested() as child:
            write = MvccWrite(child, current)
            self._execute(child, write, req, index, result)
            revision = write.finish()
        return write.events, revision

    @staticmethod
    def _defect(
        w: WriteTxn, index: int, req: internal_pb2.InternalRequest, exc: Exception, result: internal_pb2.ApplyResult
    ) -> None:
        kind = req.WhichOneof("request")
        w.on_commit(lambda: log.error("applying entry %d (%s) failed; answered %r", index, kind,
                                      errors.APPLY_FAILED.message, exc_info=exc))
        result.Clear()
        result.error = errors.APPLY_FAILED.message

    def _execute(
        self,
        w: WriteTxn,
        write: MvccWrite,
        req: internal_pb2.InternalRequest,
        index: int,
        result: internal_pb2.ApplyResult,
    ) -> None:
        kind = req.WhichOneof("request")
        if kind == "alarm":
            self._nospace_raised = None  # read again after this request, applied or rolled back
        elif kind in ADDS_DATA and self._nospace(w):
            raise errors.NO_SPACE.exception()
        if kind in authorize.CHECKED or kind in auth_store.AUTH_REQUESTS:
            auth = self._auth_state
            if auth is None:
                auth = self._auth_state = self.auth.state(w.txn, w.env)
            if kind in auth_store.AUTH_REQUESTS:
                self._auth_state = None  # read again after this request, applied or rolled back
                auth_store.apply(w, auth, kind, getattr(req, kind), req.header, index, result)
                return
            authorize.check(w, auth, req, kind)
        if kind == "put":
            result.put.CopyFrom(requests.put(write, req.put))
        elif kind == "delete_range":
            result.delete_range.CopyFrom(requests.delete_range(write, req.delete_range))
        elif kind == "txn":
            result.txn.CopyFrom(requests.txn(write, req.txn))
        elif kind == "compaction":
            write.compact(req.compaction.revision)
            result.compaction.SetInParent()
        elif kind == "lease_grant":
            result.lease_grant.CopyFrom(leases.grant(w, req.lease_grant, index, self.config.min_lease_ttl))
        elif kind == "lease_revoke":
            result.lease_revoke.CopyFrom(leases.revoke(write, req.lease_revoke.ID))
        elif kind == "lease_checkpoint":
            cp = req.lease_checkpoint
            result.lease_checkpoint.CopyFrom(leases.checkpoint(w, cp.id, cp.remaining_ttl))
        elif kind == "alarm":
            result.alarm.CopyFrom(self._alarm(w, req.alarm))
        elif kind == "publish_member":
            result.publish_member.CopyFrom(self._publish(w, req.publish_member))
        elif kind == "member_update":
            result.member_update.CopyFrom(self._update_member(w, req.member_update))
        else:
            raise errors.MALFORMED_REQUEST.exception()  # request_shape refuses these first

    def _remember(self, w: WriteTxn, client_id: int, seq: int, result: internal_pb2.ApplyResult) -> None:
        """Store the answer to (client, seq) and forget this client's answers older than the window."""
        db = w.db("dedup")
        w.txn.put(_DEDUP.pack(client_id, seq), result.SerializeToString(), db=db)
        oldest_kept = seq - self.config.dedup_window + 1
        cur = w.txn.cursor(db=db)
        if cur.set_range(_DEDUP.pack(client_id, 0)):
            while key := cur.key():
                cid, s = _DEDUP.unpack(key)
                if cid != client_id or s >= oldest_kept:
                    break
                cur.delete()

    # --- alarms and membership ------------------------------------------------------------------------------

    def _nospace(self, w: WriteTxn) -> bool:
        if self._nospace_raised is None:
            self._nospace_raised = any(a.alarm == rpc_pb2.NOSPACE for a in alarms(w.txn, w.env))
        return self._nospace_raised

    @staticmethod
    def _alarm(w: WriteTxn, req: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        db = w.db("alarms")
        key = _ALARM.pack(req.memberID, req.alarm)
        resp = rpc_pb2.AlarmResponse()
        if req.action == rpc_pb2.AlarmRequest.ACTIVATE and req.alarm != rpc_pb2.NONE:
            w.txn.put(key, b"", db=db)
            resp.alarms.add(memberID=req.memberID, alarm=req.alarm)
        elif req.action == rpc_pb2.AlarmRequest.DEACTIVATE:
            if w.txn.delete(key, db=db):
                resp.alarms.add(memberID=req.memberID, alarm=req.alarm)
        else:
            resp.alarms.extend(alarms(w.txn, w.env))
        return resp

    @staticmethod
    def _apply_member_change(w: WriteTxn, cc: ConfChange, after: ConfState) -> None:
        """The member record follows the configuration ``cc`` led to (``confchange.apply``), and so does
        the record of removed members: written in the transaction that records the configuration, so the
        two never disagree after a crash (``raftkv/storage/README.md``). Member ids are derived from the
        peer URL, so an id comes back when a member is added again at the same URL (a replaced machine,
        with fresh data): that addition makes it a member again, no longer a removed one."""
        db = w.db("members")
        key = _member_key(cc.node_id)
        if cc.type == ConfChangeType.REMOVE_NODE:
            w.txn.delete(key, db=db)
            w.txn.put(key, b"", db=w.db("members_removed"))
            return
        w.txn.delete(key, db=w.db("members_removed"))
        raw = w.txn.get(key, db=db)
        member = rpc_pb2.Member.FromString(raw) if raw else rpc_pb2.Member(ID=cc.node_id)
        if cc.context:
            member.CopyFrom(internal_pb2.MemberContext.FromString(cc.context).member)
            member.ID = cc.node_id
        member.isLearner = cc.node_id in after.learners
        w.txn.put(key, member.SerializeToString(), db=db)

    @staticmethod
    def _update_member(w: WriteTxn, update: rpc_pb2.MemberUpdateRequest) -> rpc_pb2.MemberUpdateResponse:
        """``member update``: new peer URLs for an existing member, with etcd's checks (the member exists,
        no other member has any of the URLs), made here so that every replica decides the same."""
        db = w.db("members")
        current = members(w.txn, w.env)
        target = next((m for m in current if m.ID == update.ID), None)
        if target is None:
            raise errors.MEMBER_NOT_FOUND.exception()
        taken = {url for m in current if m.ID != update.ID for url in m.peerURLs}
        if taken & set(update.peerURLs):
            raise errors.PEER_URL_EXISTS.exception()
        del target.peerURLs[:]
        target.peerURLs.extend(update.peerURLs)
        w.txn.put(_member_key(target.ID), target.SerializeToString(), db=db)
        resp = rpc_pb2.MemberUpdateResponse()
        resp.members.extend(members(w.txn, w.env))
        return resp

    @staticmethod
    def _publish(w: WriteTxn, published: rpc_pb2.Member) -> rpc_pb2.MemberUpdateResponse:
        """A started member announces its name and client URLs; a removed member's announcement is ignored."""
        db = w.db("members")
        key = _member_key(published.ID)
        raw = w.txn.get(key, db=db)
        if raw is not None:
            member = rpc_pb2.Member.FromString(raw)
            member.name = published.name
            del member.clientURLs[:]
            member.clientURLs.extend(published.clientURLs)
            w.txn.put(key, member.SerializeToString(), db=db)
        resp = rpc_pb2.MemberUpdateResponse()
        resp.members.extend(members(w.txn, w.env))
        return resp
