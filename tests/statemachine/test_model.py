"""Random put/delete/txn sequences against a plain in-memory model of etcd's MVCC rules."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv.proto import rpc_pb2
from tests.statemachine.conftest import Harness

KEYS = [b"a", b"b", b"c", b"d"]


@dataclass
class Model:
    rev: int = 1
    live: dict[bytes, tuple[bytes, int, int, int]] = field(default_factory=dict)  # value, create, mod, version
    snapshots: dict[int, dict[bytes, tuple[bytes, int, int, int]]] = field(default_factory=dict)

    def apply(self, writes: list[tuple[str, bytes, bytes]]) -> None:
        """One request: all writes share a revision, consumed only if something changed."""
        rev = self.rev + 1
        changed = False
        for kind, key, value in writes:
            if kind == "put":
                old = self.live.get(key)
                self.live[key] = (value, old[1] if old else rev, rev, old[3] + 1 if old else 1)
                changed = True
            else:
                doomed = [k for k in self.live if key <= k < value] if value else [k for k in self.live if k == key]
                for k in doomed:
                    del self.live[k]
                changed = changed or bool(doomed)
        if changed:
            self.rev = rev
        self.snapshots[self.rev] = dict(self.live)


op = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.binary(max_size=3)),
    st.tuples(st.just("del"), st.sampled_from(KEYS), st.sampled_from([b"", b"c", b"z"])),
)
request = st.one_of(
    op.map(lambda o: ("single", [o], b"")),
    st.tuples(st.lists(op, min_size=1, max_size=3), st.sampled_from(KEYS)).map(lambda t: ("txn", t[0], t[1])),
)


def to_request_op(kind: str, key: bytes, value: bytes) -> rpc_pb2.RequestOp:
    if kind == "put":
        return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value))
    return rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key, range_end=value))


def distinct_writes(ops: list[tuple[str, bytes, bytes]]) -> bool:
    """etcd refuses a txn writing a key twice; keep generated txns valid (refusal is tested elsewhere)."""
    puts = [k for kind, k, _ in ops if kind == "put"]
    dels = [(k, e) for kind, k, e in ops if kind == "del"]
    return len(set(puts)) == len(puts) and not any(
        (k <= p < e) if e else p == k for p in puts for k, e in dels
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(request, min_size=1, max_size=12))
def test_store_matches_model(requests: list[tuple[str, list[tuple[str, bytes, bytes]], bytes]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        h = Harness(Path(tmp) / "node")
        model = Model()
        model.snapshots[1] = {}
        try:
            for shape, ops, guard in requests:
                if shape == "single":
                    kind, key, value = ops[0]
                    if kind == "put":
                        h.put(key, value)
                    else:
                        h.delete(key, value)
                    model.apply(ops)
                elif distinct_writes(ops):
                    exists = rpc_pb2.Compare(key=guard, target=rpc_pb2.Compare.VERSION, result=rpc_pb2.Compare.GREATER, version=0)
                    txn = rpc_pb2.TxnRequest(compare=[exists], success=[to_request_op(*o) for o in ops])
                    ok = h.apply(txn=txn).result.txn.succeeded
                    assert ok == (guard in model.live)
                    model.apply(ops if ok else [])
                assert h.store.revision() == model.rev
            for rev, expected in model.snapshots.items():
                got = h.range(b"\0", b"\0", revision=rev)
                assert {kv.key: (kv.value, kv.create_revision, kv.mod_revision, kv.version) for kv in got.kvs} == expected
        finally:
            h.store.close()
