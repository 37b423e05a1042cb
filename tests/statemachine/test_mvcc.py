"""MVCC semantics against etcd's documented behaviour (revisions, versions, history, ranges, txns)."""

from __future__ import annotations

import pytest

from raftkv import errors
from raftkv.errors import EtcdException
from raftkv.proto import kv_pb2, rpc_pb2
from raftkv.statemachine.mvcc import HistoryPage
from tests.statemachine.conftest import Harness

RR = rpc_pb2.RangeRequest
C = rpc_pb2.Compare


def op_put(key: bytes, value: bytes = b"x") -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value))


def op_del(key: bytes, range_end: bytes = b"") -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key, range_end=range_end))


def keys(resp: rpc_pb2.RangeResponse) -> list[bytes]:
    return [kv.key for kv in resp.kvs]


def test_fresh_store_is_at_revision_one_and_each_write_takes_one(h: Harness) -> None:
    assert h.store.revision() == 1
    first = h.put(b"a", b"1")
    assert first.revision == 2 and first.result.put.header.revision == 2
    h.put(b"a", b"1")  # an identical value still makes a revision
    kv = h.range(b"a").kvs[0]
    assert (kv.create_revision, kv.mod_revision, kv.version) == (2, 3, 2)


def test_no_revision_for_a_delete_that_deletes_nothing(h: Harness) -> None:
    h.put(b"a")
    applied = h.delete(b"missing")
    assert applied.result.delete_range.deleted == 0 and applied.revision == 2 and not applied.events
    assert h.store.revision() == 2


def test_delete_resets_the_generation(h: Harness) -> None:
    h.put(b"k", b"1")
    deleted = h.delete(b"k", prev_kv=True)
    assert deleted.result.delete_range.prev_kvs[0].value == b"1"
    assert deleted.events[0].type == kv_pb2.Event.DELETE and deleted.events[0].kv.mod_revision == 3
    h.put(b"k", b"2")
    kv = h.range(b"k").kvs[0]
    assert (kv.create_revision, kv.mod_revision, kv.version) == (4, 4, 1)


def test_historical_ranges_and_compaction_errors(h: Harness) -> None:
    h.put(b"a", b"1")  # rev 2
    h.put(b"a", b"2")  # rev 3
    h.delete(b"a")  # rev 4
    assert h.range(b"a", revision=2).kvs[0].value == b"1"
    assert h.range(b"a", revision=3).kvs[0].value == b"2"
    assert h.range(b"a", revision=4).count == 0
    with pytest.raises(EtcdException) as exc:
        h.range(b"a", revision=5)
    assert exc.value.error == errors.FUTURE_REV
    assert h.apply(compaction=rpc_pb2.CompactionRequest(revision=3)).result.error == ""
    assert h.range(b"a", revision=3).kvs[0].value == b"2"
    with pytest.raises(EtcdException) as exc:
        h.range(b"a", revision=2)
    assert exc.value.error == errors.COMPACTED
    assert h.apply(compaction=rpc_pb2.CompactionRequest(revision=3)).result.error == errors.COMPACTED.message
    assert h.store.revision() == 4  # compaction makes no revision
    with pytest.raises(EtcdException):
        history(h, 2, b"a")
    assert [rev for rev, _ in history(h, 3, b"a").revisions] == [3, 4]  # etcd: start == compact is served
    assert [rev for rev, _ in history(h, 4, b"a").revisions] == [4]


def test_prefix_from_key_sort_limit_count(h: Harness) -> None:
    for k, v in [(b"p/c", b"1"), (b"p/a", b"3"), (b"p/b", b"2"), (b"q", b"0"), (b"\xff", b"9")]:
        h.put(k, v)
    assert keys(h.range(b"p/", b"p0")) == [b"p/a", b"p/b", b"p/c"]
    assert keys(h.range(b"p/b", b"\0")) == [b"p/b", b"p/c", b"q", b"\xff"]
    assert h.range(b"\0", b"\0", count_only=True).count == 5
    limited = h.range(b"p/", b"p0", limit=2)
    assert keys(limited) == [b"p/a", b"p/b"] and limited.more and limited.count == 3
    by_value = h.range(b"p/", b"p0", sort_target=RR.VALUE, sort_order=RR.DESCEND, limit=2)
    assert [kv.value for kv in by_value.kvs] == [b"3", b"2"] and by_value.more
    assert keys(h.range(b"p/", b"p0", sort_order=RR.DESCEND)) == [b"p/c", b"p/b", b"p/a"]
    assert all(kv.value == b"" for kv in h.range(b"p/", b"p0", keys_only=True).kvs)
    assert keys(h.range(b"p/", b"p0", min_mod_revision=3, max_create_revision=3)) == [b"p/a"]


def test_a_txn_is_one_revision_with_sub_revisions(h: Harness) -> None:
    h.put(b"a", b"1")
    txn = rpc_pb2.TxnRequest(
        compare=[C(key=b"a", target=C.VALUE, result=C.EQUAL, value=b"1")],
        success=[op_put(b"b"), op_put(b"c"), op_del(b"a"), rpc_pb2.RequestOp(request_range=RR(key=b"b"))],
        failure=[op_put(b"z")],
    )
    applied = h.apply(txn=txn)
    resp = applied.result.txn
    assert resp.succeeded and applied.revision == 3
    assert [e.kv.key for e in applied.events] == [b"b", b"c", b"a"]
    assert resp.responses[3].response_range.kvs[0].key == b"b"  # a txn sees its own writes
    assert h.store.revision() == 3
    failed = h.apply(txn=txn)
    assert not failed.result.txn.succeeded and failed.revision == 4 and h.range(b"z").count == 1


def test_txn_compare_with_range_end_needs_every_key(h: Harness) -> None:
    h.put(b"r/1", b"1")
    h.put(b"r/2", b"1")
    h.put(b"r/2", b"2")

    def versions_all_one() -> bool:
        cmp = C(key=b"r/", range_end=b"r0", target=C.VERSION, result=C.EQUAL, version=1)
        return h.apply(txn=rpc_pb2.TxnRequest(compare=[cmp])).result.txn.succeeded

    assert not versions_all_one()
    h.delete(b"r/2")
    assert versions_all_one()
    missing = C(key=b"nothing", target=C.CREATE, result=C.EQUAL, create_revision=0)
    assert h.apply(txn=rpc_pb2.TxnRequest(compare=[missing])).result.txn.succeeded


def test_txn_limits_and_duplicate_keys(h: Harness) -> None:
    too_many = rpc_pb2.TxnRequest(success=[op_put(b"k%d" % i) for i in range(129)])
    assert h.apply(txn=too_many).result.error == errors.TOO_MANY_OPS.message
    ok = rpc_pb2.TxnRequest(success=[op_put(b"k%d" % i) for i in range(128)])
    assert h.apply(txn=ok).result.error == ""
    for branch in (
        [op_put(b"a"), op_put(b"a")],
        [op_put(b"b"), op_del(b"a", b"c")],
        [rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(success=[op_put(b"a")])), op_put(b"a")],
    ):
        before = h.store.revision()
        assert h.apply(txn=rpc_pb2.TxnRequest(success=branch)).result.error == errors.DUPLICATE_KEY.message
        assert h.store.revision() == before
    then_else = rpc_pb2.RequestOp(
        request_txn=rpc_pb2.TxnRequest(success=[op_put(b"a")], failure=[op_put(b"a")])
    )
    assert h.apply(txn=rpc_pb2.TxnRequest(success=[then_else, op_del(b"x")])).result.error == ""


def test_put_options_and_leases(h: Harness) -> None:
    missing_lease = h.put(b"a", lease=42)
    assert missing_lease.result.error == errors.LEASE_NOT_FOUND.message and h.store.revision() == 1
    grant = h.apply(lease_grant=rpc_pb2.LeaseGrantRequest(TTL=1, ID=42)).result.lease_grant
    assert (grant.ID, grant.TTL) == (42, 2)  # raised to the minimum TTL
    assert h.apply(lease_grant=rpc_pb2.LeaseGrantRequest(TTL=5, ID=42)).result.error == errors.LEASE_EXISTS.message
    assert h.apply(lease_grant=rpc_pb2.LeaseGrantRequest(TTL=10**10)).result.error == errors.LEASE_TTL_TOO_LARGE.message
    h.put(b"a", b"1", lease=42)
    h.put(b"b", b"2", lease=42)
    assert h.put(b"nope", ignore_value=True, value=b"").result.error == errors.KEY_NOT_FOUND.message
    kept = h.put(b"a", b"", ignore_value=True, ignore_lease=True, prev_kv=True)
    assert kept.result.put.prev_kv.value == b"1" and h.range(b"a").kvs[0].value == b"1"
    assert h.range(b"a").kvs[0].lease == 42
    lease, attached = h.store.lease(42)  # type: ignore[misc]
    assert attached == [b"a", b"b"]
    before = h.store.revision()
    revoked = h.apply(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=42))
    assert revoked.revision == before + 1 and len(revoked.events) == 2  # all keys in one revision
    assert h.range(b"a", b"c").count == 0 and h.store.lease(42) is None
    assert h.apply(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=42)).result.error == errors.LEASE_NOT_FOUND.message


def history(h: Harness, start: int, key: bytes, range_end: bytes = b"", *, prev_kv: bool = False,
            max_bytes: int = 1 << 30) -> HistoryPage:
    return h.store.history_page(start, key, range_end, prev_kv=prev_kv, max_bytes=max_bytes)


def test_history_groups_by_revision_with_prev_kv_only_when_asked(h: Harness) -> None:
    h.put(b"w/a", b"1")
    h.put(b"other", b"1")
    h.put(b"w/a", b"2")
    got = history(h, 2, b"w/", b"w0", prev_kv=True)
    assert [rev for rev, _ in got.revisions] == [2, 4]
    assert got.revisions[1][1][0].prev_kv.value == b"1"
    assert got.next_revision == h.store.revision() + 1
    assert not history(h, 2, b"w/", b"w0").revisions[1][1][0].HasField("prev_kv")


def test_history_pages_are_bounded_by_bytes_scanned_and_end_on_whole_revisions(h: Harness) -> None:
    """A step stops at a revision boundary once it has read ``max_bytes``, matching or not, so a watcher
    of a rarely written key costs a bounded amount per step; following the pages misses nothing."""
    h.apply(txn=rpc_pb2.TxnRequest(success=[op_put(b"w/1", b"a" * 100), op_put(b"w/2", b"b" * 100)]))
    for _i in range(20):
        h.put(b"other", b"x" * 100)
    h.put(b"w/1", b"c")
    first = history(h, 1, b"w/", b"w0", max_bytes=1)
    assert [(rev, len(events)) for rev, events in first.revisions] == [(2, 2)]  # the txn's revision, whole
    assert first.next_revision == 3 and first.scanned_bytes > 200
    seen, start, steps = [], 1, 0
    while start <= h.store.revision():
        page = history(h, start, b"w/", b"w0", max_bytes=500)
        seen += [rev for rev, _ in page.revisions]
        start, steps = page.next_revision, steps + 1
    assert seen == [2, h.store.revision()] and steps > 2


def test_keys_beyond_lmdb_limits_are_refused_not_fatal(h: Harness) -> None:
    long_key = b"k" * 600
    assert h.put(long_key).result.error == errors.REQUEST_TOO_LARGE.message
    assert h.delete(long_key).result.error == errors.REQUEST_TOO_LARGE.message
    txn = rpc_pb2.TxnRequest(success=[op_put(long_key)])
    assert h.apply(txn=txn).result.error == errors.REQUEST_TOO_LARGE.message
    assert h.put(b"k" * 503).result.error == ""
    assert h.store.revision() == 2


def _read_only_cases() -> list[rpc_pb2.TxnRequest]:
    def rng(key: bytes, **kw: object) -> rpc_pb2.RequestOp:
        return rpc_pb2.RequestOp(request_range=RR(key=key, **kw))  # type: ignore[arg-type]

    return [
        rpc_pb2.TxnRequest(),  # compares and operations both empty: succeeds with nothing to say
        rpc_pb2.TxnRequest(compare=[C(key=b"k/1", target=C.VALUE, result=C.EQUAL, value=b"b")],
                           success=[rng(b"k/", range_end=b"k0", limit=1), rng(b"missing")],
                           failure=[rng(b"k/2", revision=3)]),
        rpc_pb2.TxnRequest(compare=[C(key=b"k/1", target=C.VALUE, result=C.EQUAL, value=b"a")],
                           success=[rng(b"k/1")],
                           failure=[rng(b"k/", range_end=b"k0", count_only=True),
                                    rng(b"k/", range_end=b"k0", sort_target=RR.MOD, sort_order=RR.DESCEND),
                                    rng(b"k/1", revision=2)]),
        rpc_pb2.TxnRequest(compare=[C(key=b"k/", range_end=b"k0", target=C.VERSION, result=C.GREATER, version=0),
                                    C(key=b"nothing", target=C.CREATE, result=C.EQUAL, create_revision=0)],
                           success=[rng(b"k/2", keys_only=True, serializable=True)]),
        rpc_pb2.TxnRequest(success=[rng(b"k/1", revision=1)]),  # compacted below
        rpc_pb2.TxnRequest(success=[rng(b"k/1", revision=99)]),  # a future revision
        rpc_pb2.TxnRequest(failure=[rng(b"k/1", revision=99)]),  # ... in the branch not taken: no error
    ]


def test_a_read_only_txn_served_from_a_read_view_answers_as_the_log_would(h: Harness) -> None:
    """The read view gives each read-only transaction what applying it through the log gives, error or
    answer, inner headers included; only the log entry (and with it the dedup record) is saved."""
    from raftkv.statemachine import requests

    h.put(b"k/1", b"a")  # rev 2
    h.put(b"k/2", b"x")  # rev 3
    h.put(b"k/1", b"b")  # rev 4
    h.apply(compaction=rpc_pb2.CompactionRequest(revision=2))
    refused = []
    for case in _read_only_cases():
        assert requests.is_read_only(case)
        applied = h.apply(txn=case)
        assert applied.revision == 4 and not applied.events
        try:
            local = h.store.read_only_txn(case)
        except EtcdException as exc:
            assert applied.result.error == exc.error.message, case
            refused.append(exc.error)
            continue
        assert applied.result.error == "", case
        assert local.header.revision == 4 and local == applied.result.txn, case
    assert refused == [errors.COMPACTED, errors.FUTURE_REV]


def test_what_counts_as_a_read_only_and_a_serializable_txn_is_etcds() -> None:
    from raftkv.statemachine.requests import is_read_only, is_serializable

    get = rpc_pb2.RequestOp(request_range=RR(key=b"a"))
    serial = rpc_pb2.RequestOp(request_range=RR(key=b"a", serializable=True))
    nested = rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(success=[get]))
    assert is_read_only(rpc_pb2.TxnRequest()) and is_serializable(rpc_pb2.TxnRequest())
    assert is_read_only(rpc_pb2.TxnRequest(success=[get], failure=[serial]))
    assert not is_serializable(rpc_pb2.TxnRequest(success=[serial], failure=[get]))
    assert is_serializable(rpc_pb2.TxnRequest(success=[serial], failure=[serial]))
    assert not is_read_only(rpc_pb2.TxnRequest(success=[get], failure=[op_put(b"a")]))
    assert not is_read_only(rpc_pb2.TxnRequest(success=[nested]))  # a nested txn is not, as in etcd
