"""Which committed entries may be applied inside the transaction the Raft loop waits for, and that the
writer applies them from the loop's decode."""

from __future__ import annotations

import pytest

from raftkv import errors
from raftkv.core.types import Entry, EntryType, HardState
from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.statemachine import applier
from raftkv.statemachine.applier import Committed
from tests.statemachine.conftest import Harness


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
    assert Committed.decode(entries).bounded()


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
        assert not Committed.decode([entry(put(b"x"), 1), entry(request, 2)]).bounded(), request


def test_entries_decoded_once_are_applied_without_a_second_decode(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    entries = h.entries(put(b"a"), txn(rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"b", value=b"v"))))
    h.index += 1
    entries.append(Entry(1, h.index, data=b"\xff not a request"))
    committed = Committed.decode(entries)

    def decode_again(data: bytes) -> None:
        raise AssertionError(f"decoded again: {data!r}")

    monkeypatch.setattr(applier, "decode_request", decode_again)
    applied = h.store.save(None, entries, HardState(1, 1, h.index), committed).result()
    assert [a.index for a in applied] == [e.index for e in entries]
    assert applied[2].result is not None and applied[2].result.error == errors.MALFORMED_REQUEST.message
    assert [kv.key for kv in h.range(b"a", b"c").kvs] == [b"a", b"b"]
