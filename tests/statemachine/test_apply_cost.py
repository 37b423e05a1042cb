"""Which committed entries may be applied inside the transaction the Raft loop waits for."""

from __future__ import annotations

from raftkv.core.types import Entry, EntryType
from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.statemachine.applier import apply_is_bounded


def entry(request: internal_pb2.InternalRequest, index: int = 1) -> Entry:
    return Entry(term=1, index=index, data=request.SerializeToString())


def put(key: bytes) -> internal_pb2.InternalRequest:
    return internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=key, value=b"v"))


def txn(*ops: rpc_pb2.RequestOp) -> internal_pb2.InternalRequest:
    return internal_pb2.InternalRequest(txn=rpc_pb2.TxnRequest(success=list(ops)))


def test_single_key_work_is_bounded() -> None:
    entries = [
        Entry(term=1, index=1),  # a new leader's empty entry
        Entry(term=1, index=2, type=EntryType.CONF_CHANGE, data=b""),
        entry(put(b"a")),
        entry(internal_pb2.InternalRequest(delete_range=rpc_pb2.DeleteRangeRequest(key=b"a"))),
        entry(internal_pb2.InternalRequest(lease_grant=rpc_pb2.LeaseGrantRequest(ID=7, TTL=10))),
        entry(txn(rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"a")),
                  rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"b")))),
    ]
    assert apply_is_bounded(entries)


def test_work_that_grows_with_the_store_is_not() -> None:
    many = [
        internal_pb2.InternalRequest(delete_range=rpc_pb2.DeleteRangeRequest(key=b"a", range_end=b"\0")),
        internal_pb2.InternalRequest(compaction=rpc_pb2.CompactionRequest(revision=5)),
        internal_pb2.InternalRequest(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=7)),
        txn(rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"a", range_end=b"b"))),
        txn(rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(
            failure=[rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"a", range_end=b"b"))]))),
    ]
    for request in many:
        assert not apply_is_bounded([entry(put(b"x"), 1), entry(request, 2)]), request
