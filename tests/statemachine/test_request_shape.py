"""The shape rules of ``request_shape``: the bounds that keep every accepted request in the log's encoding,
and the O(n log n) search for keys written twice, checked against the plain definition."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv import errors
from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.statemachine import request_shape
from raftkv.statemachine.mvcc import KeyRange
from raftkv.statemachine.request_shape import MAX_TXN_DEPTH, _DeletedKeys, check_txn
from tests.hostile.strategies import messages, nested_txn

keys = st.binary(max_size=3)
ranges = st.tuples(keys, st.one_of(st.just(b""), st.just(b"\0"), keys))


@settings(deadline=None)
@given(st.lists(ranges, max_size=12), st.lists(keys, max_size=12))
def test_deleted_keys_is_the_union_of_its_ranges(added: list[tuple[bytes, bytes]], probes: list[bytes]) -> None:
    deleted = _DeletedKeys()
    for key, end in added:
        deleted.add(key, end)
    for probe in [*probes, *(k for k, _ in added)]:
        assert (probe in deleted) == any(KeyRange(k, e).contains(probe) for k, e in added), (added, probe)
    assert all(s < e for s, e in zip(deleted.starts, deleted.ends)), "intervals must stay non-empty"
    assert all(e < s for e, s in zip(deleted.ends, deleted.starts[1:])), "intervals must stay disjoint and apart"


def test_nesting_up_to_the_bound_is_accepted_and_one_more_is_refused() -> None:
    check_txn(nested_txn(MAX_TXN_DEPTH))
    with pytest.raises(errors.EtcdException) as refused:
        check_txn(nested_txn(MAX_TXN_DEPTH + 1))
    assert refused.value.error == errors.TXN_TOO_DEEP


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.one_of(messages(rpc_pb2.TxnRequest, depth=9), st.integers(1, MAX_TXN_DEPTH + 2).map(nested_txn)))
def test_the_log_carries_every_txn_the_rules_accept(txn: rpc_pb2.TxnRequest) -> None:
    """Whatever passes the rules decodes again from the log, and so does a response nested like it."""
    try:
        check_txn(txn)
    except errors.EtcdException:
        return
    entry = internal_pb2.InternalRequest(txn=txn).SerializeToString()
    assert internal_pb2.InternalRequest.FromString(entry).txn == txn
    response = rpc_pb2.TxnResponse()
    _mirror(txn, response)
    stored = internal_pb2.ApplyResult(txn=response).SerializeToString()
    assert internal_pb2.ApplyResult.FromString(stored).txn == response


def _mirror(txn: rpc_pb2.TxnRequest, response: rpc_pb2.TxnResponse) -> None:
    """The deepest response ``txn`` can get: a nested response per nested txn, a range with a key at the leaves."""
    for op in txn.success:
        out = response.responses.add()
        if op.WhichOneof("request") == "request_txn":
            _mirror(op.request_txn, out.response_txn)
        else:
            out.response_range.kvs.add(key=b"k")


@pytest.mark.parametrize("field", ["target", "result"])
def test_unknown_compare_enums_are_refused(field: str) -> None:
    with pytest.raises(errors.EtcdException) as refused:
        check_txn(rpc_pb2.TxnRequest(compare=[rpc_pb2.Compare(key=b"a", **{field: 5})]))
    assert refused.value.error == errors.INVALID_COMPARE


def test_a_log_entry_naming_no_request_is_malformed() -> None:
    with pytest.raises(errors.EtcdException) as refused:
        request_shape.check_request(internal_pb2.InternalRequest())
    assert refused.value.error == errors.MALFORMED_REQUEST
