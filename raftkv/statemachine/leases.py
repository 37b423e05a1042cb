"""Leases as replicated state: id, granted TTL, last checkpointed remaining TTL, and attached keys.

Only what every replica must agree on lives here. *When* a lease expires is decided by the leader's clock
(``raftkv.server.lessor``), which then proposes a ``lease_revoke``; applying it deletes the lease's keys in
one revision, exactly like a client revoke.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from raftkv import errors
from raftkv.proto import rpc_pb2
from raftkv.statemachine.mvcc import MvccWrite, lease_id_bytes, lease_keys
from raftkv.storage.env import Env, WriteTxn
from raftkv.storage.sealed import SealedTxn

_RECORD = struct.Struct(">qq")  # granted TTL, checkpointed remaining TTL (0 = never checkpointed)
_ID_MIX = 0x9E3779B97F4A7C15  # spreads entry indices over the id space, so ids look like etcd's random ones


@dataclass(frozen=True, slots=True)
class Lease:
    id: int
    granted_ttl: int
    remaining_ttl: int  # as last checkpointed; 0 when never checkpointed

    def keys(self, txn: SealedTxn, env: Env) -> list[bytes]:
        return lease_keys(txn, env, self.id)


def get(txn: SealedTxn, env: Env, lease_id: int) -> Lease | None:
    raw = txn.get(lease_id_bytes(lease_id), db=env.db("leases"))
    if raw is None:
        return None
    granted, remaining = _RECORD.unpack(raw)
    return Lease(lease_id, granted, remaining)


def all_leases(txn: SealedTxn, env: Env) -> list[Lease]:
    out = []
    for key, raw in txn.cursor(db=env.db("leases")):
        granted, remaining = _RECORD.unpack(raw)
        out.append(Lease(int.from_bytes(key, "big", signed=True), granted, remaining))
    return out


def lease_record(lease: Lease) -> tuple[bytes, bytes]:
    """A ``leases`` record (for building a store from another format)."""
    return lease_id_bytes(lease.id), _RECORD.pack(lease.granted_ttl, lease.remaining_ttl)


def _put(w: WriteTxn, lease: Lease) -> None:
    w.txn.put(*lease_record(lease), db=w.db("leases"))


def grant(w: WriteTxn, req: rpc_pb2.LeaseGrantRequest, entry_index: int, min_ttl: int) -> rpc_pb2.LeaseGrantResponse:
    """etcd's Grant: TTL raised to ``min_ttl`` (its maximum is a shape rule); id 0 => a deterministic fresh id."""
    ttl = max(req.TTL, min_ttl)
    lease_id = req.ID
    if lease_id == 0:
        lease_id = _fresh_id(w, entry_index)
    elif get(w.txn, w.env, lease_id) is not None:
        raise errors.LEASE_EXISTS.exception()
    _put(w, Lease(lease_id, ttl, 0))
    return rpc_pb2.LeaseGrantResponse(ID=lease_id, TTL=ttl)


def _fresh_id(w: WriteTxn, entry_index: int) -> int:
    """A positive id derived from the log position: the same on every replica, and unique (probe on clash)."""
    candidate = (entry_index * _ID_MIX) & 0x7FFF_FFFF_FFFF_FFFF
    while candidate == 0 or get(w.txn, w.env, candidate) is not None:
        candidate = (candidate + 1) & 0x7FFF_FFFF_FFFF_FFFF
    return candidate


def revoke(write: MvccWrite, lease_id: int) -> rpc_pb2.LeaseRevokeResponse:
    """Delete the lease and every key attached to it, all in the request's one revision."""
    if get(write.txn, write.env, lease_id) is None:
        raise errors.LEASE_NOT_FOUND.exception()
    for key in lease_keys(write.txn, write.env, lease_id):
        write.delete_range(key, b"")
    write.txn.delete(lease_id_bytes(lease_id), db=write.env.db("leases"))
    return rpc_pb2.LeaseRevokeResponse()


def checkpoint(w: WriteTxn, lease_id: int, remaining_ttl: int) -> rpc_pb2.LeaseCheckpointResponse:
    """Record the remaining TTL so a new leader resumes from it; a lease already gone is ignored (as in etcd)."""
    lease = get(w.txn, w.env, lease_id)
    if lease is not None:
        _put(w, Lease(lease.id, lease.granted_ttl, remaining_ttl))
    return rpc_pb2.LeaseCheckpointResponse()
