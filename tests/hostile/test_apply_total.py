"""The apply is total: whatever a committed entry holds, two replicas reach the same results and the same
state, and nothing raises.

Two real ``NodeStore``s (real LMDB files) are fed the same entries — encoded requests of every kind with
hostile fields, the same with a flipped byte or cut short, and random bytes — one replica an entry per
transaction, the other all of them in one, as a slow and a fast member would. Every entry must get a result,
the results and events must match byte for byte, and so must the whole state-machine content afterwards.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv import errors
from raftkv.core.types import ConfState, Entry, HardState, SnapshotMeta
from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.statemachine.applier import AppliedEntry
from raftkv.statemachine.node_store import NodeStore

from .strategies import entry_data, internal_requests, internal_txn_bytes, nested_txn, nested_txn_bytes

#: A few ordinary requests, so that hostile ones meet existing keys and leases.
_SETUP = [
    internal_pb2.InternalRequest(lease_grant=rpc_pb2.LeaseGrantRequest(ID=1, TTL=60)),
    internal_pb2.InternalRequest(lease_grant=rpc_pb2.LeaseGrantRequest(ID=-1, TTL=60)),
    internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=b"a", value=b"1", lease=1)),
    internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=b"b", value=b"2")),
]


def _replica(path: Path) -> NodeStore:
    store = NodeStore(path, sync=False)
    store.bootstrap(0xC1, 1, [(1, b"")])
    return store


def _entries(datas: Sequence[bytes]) -> list[Entry]:
    setup = [r.SerializeToString() for r in _SETUP]
    return [Entry(1, 2 + i, data=data) for i, data in enumerate([*setup, *datas])]


def _apply(store: NodeStore, entries: Sequence[Entry], one_by_one: bool) -> list[AppliedEntry]:
    store.save(None, entries, HardState(1, 1, entries[-1].index)).result()
    if not one_by_one:
        return store.apply(entries).result()
    return [applied for entry in entries for applied in store.apply([entry]).result()]


def _outcome(applied: AppliedEntry) -> tuple[object, ...]:
    result = applied.result.SerializeToString() if applied.result is not None else None
    return applied.index, applied.request_id, result, [e.SerializeToString() for e in applied.events], applied.revision


def _state(store: NodeStore) -> bytes:
    return b"".join(store.open_snapshot(SnapshotMeta(0, 0, ConfState())))


def check_total(datas: Sequence[bytes]) -> list[AppliedEntry]:
    entries = _entries(datas)
    with tempfile.TemporaryDirectory(prefix="apply-total-") as tmp:
        slow, fast = _replica(Path(tmp) / "slow"), _replica(Path(tmp) / "fast")
        try:
            applied_slow = _apply(slow, entries, one_by_one=True)
            applied_fast = _apply(fast, entries, one_by_one=False)
            assert [a.index for a in applied_slow] == [e.index for e in entries]
            assert [_outcome(a) for a in applied_slow] == [_outcome(a) for a in applied_fast]
            assert slow.applied_index() == fast.applied_index() == entries[-1].index
            assert _state(slow) == _state(fast)
            assert slow.hash_kv() == fast.hash_kv()
        finally:
            slow.close()
            fast.close()
    return applied_slow


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(entry_data, min_size=1, max_size=12))
def test_any_entries_apply_alike_on_two_replicas(datas: list[bytes]) -> None:
    for applied in check_total(datas):
        if applied.result is not None and applied.result.error:
            assert applied.result.error in errors.BY_MESSAGE, applied.result.error
            assert not applied.events, "a refused request left events"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(internal_requests(), min_size=1, max_size=8))
def test_refused_requests_leave_no_trace(requests: list[internal_pb2.InternalRequest]) -> None:
    """An error result consumes no revision: the refused request changed nothing."""
    applied = check_total([r.SerializeToString() for r in requests])
    for before, after in zip(applied, applied[1:]):
        if after.result is not None and after.result.error:
            assert after.revision == before.revision


def test_undecodable_entries_are_an_error_result() -> None:
    too_deep = internal_txn_bytes(nested_txn_bytes(60))
    for applied in check_total([b"\xff\xff\xff", too_deep, b"", internal_pb2.InternalRequest().SerializeToString()])[-4:]:
        assert applied.result is None or applied.result.error == errors.MALFORMED_REQUEST.message


def test_hostile_fields_get_etcds_errors() -> None:
    """One entry per crasher class of the log's requests: the error every member stores for it."""
    cases = {
        "txn": (rpc_pb2.TxnRequest(compare=[rpc_pb2.Compare(key=b"a", target=99)]), errors.INVALID_COMPARE),
        "put": (rpc_pb2.PutRequest(key=b"k" * 600), errors.REQUEST_TOO_LARGE),
        "alarm": (rpc_pb2.AlarmRequest(action=1, alarm=-1), errors.INVALID_ALARM),
        "lease_grant": (rpc_pb2.LeaseGrantRequest(TTL=2**62), errors.LEASE_TTL_TOO_LARGE),
    }
    requests = [internal_pb2.InternalRequest(**{kind: body}) for kind, (body, _) in cases.items()]  # type: ignore[arg-type]
    requests.append(internal_pb2.InternalRequest(txn=nested_txn(17)))
    requests.append(internal_pb2.InternalRequest(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=-1)))
    applied = check_total([r.SerializeToString() for r in requests])[len(_SETUP) :]
    expected = [error.message for _, error in cases.values()] + [errors.TXN_TOO_DEEP.message, ""]
    assert [a.result.error for a in applied if a.result is not None] == expected
