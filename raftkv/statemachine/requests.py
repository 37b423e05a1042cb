"""etcd's KV request semantics (Put, DeleteRange, Txn) on top of one MVCC revision.

The request's shape was checked before it gets here (``request_shape``: by the API before proposing, by
the applier on every entry). What is left are the checks that depend on state (leases exist,
``ignore_value`` needs the key), run against the state the request is applied to, before anything is
written, so a refused request leaves no trace.
"""

from __future__ import annotations

from collections.abc import Sequence

from raftkv import errors
from raftkv.proto import kv_pb2, rpc_pb2
from raftkv.statemachine.mvcc import KeyRange, MvccReader, MvccWrite, lease_id_bytes

_LEASES_DB = "leases"


def _check_put(reader: MvccReader, req: rpc_pb2.PutRequest) -> None:
    """State-dependent refusals of a put, evaluated before the request writes anything."""
    if (req.ignore_value or req.ignore_lease) and reader.get(req.key) is None:
        raise errors.KEY_NOT_FOUND.exception()
    if req.lease and reader.txn.get(lease_id_bytes(req.lease), db=reader.env.db(_LEASES_DB)) is None:
        raise errors.LEASE_NOT_FOUND.exception()


def _check_ops_state(reader: MvccReader, ops: Sequence[rpc_pb2.RequestOp]) -> None:
    for op in ops:
        kind = op.WhichOneof("request")
        if kind == "request_put":
            _check_put(reader, op.request_put)
        elif kind == "request_range" and op.request_range.revision != 0:  # etcd: a negative one is compacted
            reader.check_revision(op.request_range.revision)
        elif kind == "request_txn":
            # Nested branches are chosen later, against state the outer ops may have changed; like etcd we
            # check both so a refused nested op cannot fail half-way through the outer transaction.
            _check_ops_state(reader, op.request_txn.success)
            _check_ops_state(reader, op.request_txn.failure)


def put(write: MvccWrite, req: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
    _check_put(write, req)
    return _put(write, req)


def _put(write: MvccWrite, req: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
    current = write.get(req.key) if (req.ignore_value or req.ignore_lease) else None
    value = current.value if req.ignore_value and current else req.value
    lease = current.lease if req.ignore_lease and current else req.lease
    prev = write.put(req.key, value, lease)
    resp = rpc_pb2.PutResponse()
    if req.prev_kv and prev is not None:
        resp.prev_kv.CopyFrom(prev)
    return resp


def delete_range(write: MvccWrite, req: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
    deleted = write.delete_range(req.key, req.range_end)
    resp = rpc_pb2.DeleteRangeResponse(deleted=len(deleted))
    if req.prev_kv:
        resp.prev_kvs.extend(deleted)
    return resp


def txn(write: MvccWrite, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
    """Evaluate compares, check then run the chosen branch; all writes share the request's one revision."""
    succeeded = all(compare(write, c) for c in req.compare)
    branch = req.success if succeeded else req.failure
    _check_ops_state(write, branch)
    return _run_branch(write, succeeded, branch)


def is_read_only(req: rpc_pb2.TxnRequest) -> bool:
    """etcd's ``isTxnReadonly``: every operation of both branches is a Range (a nested Txn is not, even one
    that only reads). Such a transaction writes nothing, so etcd serves it from a read view, not the log."""
    return all(op.WhichOneof("request") == "request_range" for op in (*req.success, *req.failure))


def is_serializable(req: rpc_pb2.TxnRequest) -> bool:
    """etcd's ``isTxnSerializable``: a read-only transaction whose Ranges all ask for serializable reads
    needs no ReadIndex round. Like etcd, one with no operations at all (compares alone) counts as one."""
    return all(op.WhichOneof("request") == "request_range" and op.request_range.serializable
               for op in (*req.success, *req.failure))


def read_only_txn(reader: MvccReader, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
    """A transaction ``is_read_only`` accepts, evaluated in one read view (etcd's ``applyV3Base.Txn`` on a
    read transaction): the same compares and Ranges ``txn`` runs, every header at the view's revision."""
    assert is_read_only(req), "a transaction that writes goes through the log"
    succeeded = all(compare(reader, c) for c in req.compare)
    branch = req.success if succeeded else req.failure
    _check_ops_state(reader, branch)
    resp = rpc_pb2.TxnResponse(succeeded=succeeded)
    resp.header.revision = revision = reader.revision()
    for op in branch:
        out = resp.responses.add().response_range
        out.CopyFrom(reader.range(op.request_range))
        out.header.revision = revision
    return resp


def _revision_so_far(write: MvccWrite) -> int:
    """The revision a transaction has reached: its new one once anything was written, else the old one."""
    return write.rev if write.events else write.rev - 1


def _run_branch(write: MvccWrite, succeeded: bool, ops: Sequence[rpc_pb2.RequestOp]) -> rpc_pb2.TxnResponse:
    """Run ``ops`` in order. Each inner response's header carries the revision etcd's ``storeTxnWrite``
    reports at that point (clients compare them): a Put the transaction's new revision, a Range and a
    DeleteRange the revision reached so far (a DeleteRange that deletes something reaches the new one).
    A nested transaction's header is present but empty, as in etcd."""
    resp = rpc_pb2.TxnResponse(succeeded=succeeded)
    for op in ops:
        out = resp.responses.add()
        kind = op.WhichOneof("request")
        if kind == "request_range":
            out.response_range.CopyFrom(write.range(op.request_range))
            out.response_range.header.revision = _revision_so_far(write)
        elif kind == "request_put":
            out.response_put.CopyFrom(_put(write, op.request_put))
            out.response_put.header.revision = write.rev
        elif kind == "request_delete_range":
            out.response_delete_range.CopyFrom(delete_range(write, op.request_delete_range))
            out.response_delete_range.header.revision = _revision_so_far(write)
        elif kind == "request_txn":
            inner = op.request_txn
            ok = all(compare(write, c) for c in inner.compare)
            out.response_txn.CopyFrom(_run_branch(write, ok, inner.success if ok else inner.failure))
            out.response_txn.header.SetInParent()
    return resp


#: Compare target -> the field compared; KeyValue and Compare use the same field names.
_TARGET_FIELD = {
    rpc_pb2.Compare.VERSION: "version",
    rpc_pb2.Compare.CREATE: "create_revision",
    rpc_pb2.Compare.MOD: "mod_revision",
    rpc_pb2.Compare.VALUE: "value",
    rpc_pb2.Compare.LEASE: "lease",
}


def compare(reader: MvccReader, c: rpc_pb2.Compare) -> bool:
    """etcd's ``applyCompare``: with ``range_end`` every key in the range must satisfy it.

    A missing key compares as zero for VERSION/CREATE/MOD/LEASE and fails a VALUE compare.
    """
    if c.range_end:
        kvs = list(reader.latest(KeyRange(c.key, c.range_end)))
        if not kvs:
            return c.target != rpc_pb2.Compare.VALUE and _compare_one(None, c)
        return all(_compare_one(kv, c) for kv in kvs)
    return _compare_one(reader.get(c.key), c)


def _compare_one(kv: kv_pb2.KeyValue | None, c: rpc_pb2.Compare) -> bool:
    name = _TARGET_FIELD[c.target]
    if kv is None:
        if c.target == rpc_pb2.Compare.VALUE:
            return False
        have: int | bytes = 0
    else:
        have = getattr(kv, name)
    want = getattr(c, name)
    if c.result == rpc_pb2.Compare.EQUAL:
        return have == want
    if c.result == rpc_pb2.Compare.NOT_EQUAL:
        return have != want
    if c.result == rpc_pb2.Compare.GREATER:
        return have > want
    assert c.result == rpc_pb2.Compare.LESS, f"compare result {c.result} passed request_shape"
    return have < want
