"""Apply-time authorisation of key-value requests: etcd 3.4's ``authApplierV3`` (``etcdserver/apply_auth.go``).

Writes are checked when applied, on every member, against the auth state of that moment and the identity
carried in the entry (``RequestHeader.username`` / ``auth_revision``), so every replica reaches the same
verdict and a permission revoked before the entry commits is honoured. The applier calls :func:`check`
before the request writes anything: a refused request leaves no trace.

What each request needs (as etcd):
- Put: WRITE on the key; READ too with ``prev_kv``; with a lease, WRITE on every key already attached to it
  (a user who could not revoke the lease must not attach to it).
- DeleteRange: WRITE on the whole range; READ too with ``prev_kv``.
- Txn: READ on every compare's range, and every operation of both branches (nested ones too) as above.
- LeaseRevoke: WRITE on every key attached to the lease.
Requests a member proposes on its own account (lease expiry) are not checked.
"""

from __future__ import annotations

from collections.abc import Iterable

from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.statemachine import leases
from raftkv.statemachine.auth_store import AuthState
from raftkv.storage.env import WriteTxn

#: Request kinds checked here; the others (lease grants, compaction, alarms, members) need no permission.
CHECKED = frozenset({"put", "delete_range", "txn", "lease_revoke"})


def check(w: WriteTxn, state: AuthState, request: internal_pb2.InternalRequest, kind: str) -> None:
    """Raise the ``EtcdException`` etcd answers if the request's user may not make it."""
    if not state.enabled or kind not in CHECKED or request.header.by_member:
        return
    checker = _Checker(w, state, request.header.username, request.header.auth_revision)
    if kind == "put":
        checker.put(request.put)
    elif kind == "delete_range":
        checker.delete_range(request.delete_range)
    elif kind == "txn":
        checker.txn(request.txn)
    else:
        checker.lease_keys(request.lease_revoke.ID)


def check_read_only_txn(state: AuthState, username: str, auth_revision: int, req: rpc_pb2.TxnRequest) -> None:
    """The same verdict :func:`check` gives a read-only transaction (``requests.is_read_only``), for one
    served from a read view instead of the log: READ on every compare's range and every Range."""
    if state.enabled:
        _Checker(None, state, username, auth_revision).txn(req)


class _Checker:
    """``w`` is only read for a lease's keys, which only a Put needs: a read-only transaction has none."""

    def __init__(self, w: WriteTxn | None, state: AuthState, username: str, auth_revision: int) -> None:
        self._w = w
        self._state = state
        self._user = username
        self._revision = auth_revision

    def _read(self, key: bytes, range_end: bytes = b"") -> None:
        self._state.check_read(self._user, self._revision, key, range_end)

    def _write(self, key: bytes, range_end: bytes = b"") -> None:
        self._state.check_write(self._user, self._revision, key, range_end)

    def put(self, req: rpc_pb2.PutRequest) -> None:
        self._write(req.key)
        if req.lease:
            self.lease_keys(req.lease)
        if req.prev_kv:
            self._read(req.key)

    def delete_range(self, req: rpc_pb2.DeleteRangeRequest) -> None:
        self._write(req.key, req.range_end)
        if req.prev_kv:
            self._read(req.key, req.range_end)

    def lease_keys(self, lease_id: int) -> None:
        assert self._w is not None, "only a write attaches keys to a lease"
        lease = leases.get(self._w.txn, self._w.env, lease_id)
        if lease is not None:
            for key in lease.keys(self._w.txn, self._w.env):
                self._write(key)

    def txn(self, req: rpc_pb2.TxnRequest) -> None:
        for compare in req.compare:
            self._read(compare.key, compare.range_end)
        self._ops(req.success)
        self._ops(req.failure)

    def _ops(self, ops: Iterable[rpc_pb2.RequestOp]) -> None:
        for op in ops:
            kind = op.WhichOneof("request")
            if kind == "request_range":
                self._read(op.request_range.key, op.request_range.range_end)
            elif kind == "request_put":
                self.put(op.request_put)
            elif kind == "request_delete_range":
                self.delete_range(op.request_delete_range)
            elif kind == "request_txn":
                self.txn(op.request_txn)
