"""What a mixed workload leaves on disk, record by record, and what its applies hand out, pinned by digest.

The applier's write path is tuned for CPU (sealing, revision bookkeeping, range deletes); none of that may
change a stored byte: the records and their checksums are what snapshots carry, what ``hash_kv`` compares
between members and what the next version must read. The workload touches every request kind the applier
writes MVCC records for. If a change to the stored format is intended, it comes with a format version
(``raftkv.storage.integrity``) and a new digest here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.statemachine.applier import AppliedEntry
from raftkv.statemachine.node_store import STATE_DBS
from tests.statemachine.conftest import Harness

#: sha256 over every state record (db, key, sealed value) and every applied entry's result, events and revision.
DIGEST = "3ebbfd164c8cccb6ac9c6aeb3419fd845dc356c5a0a954be598e4e268ebc9d79"


def _put_op(key: bytes, value: bytes, **kw: object) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, **kw))  # type: ignore[arg-type]


def _workload(h: Harness, digest: Any) -> None:
    def note(entry: AppliedEntry) -> None:
        digest.update(repr((entry.index, entry.revision)).encode())
        if entry.result is not None:
            digest.update(entry.result.SerializeToString(deterministic=True))
        for event in entry.events:
            digest.update(event.SerializeToString(deterministic=True))

    granted = h.apply(lease_grant=rpc_pb2.LeaseGrantRequest(ID=77, TTL=60))
    note(granted)
    lease = 77
    note(h.apply(lease_grant=rpc_pb2.LeaseGrantRequest(ID=78, TTL=60)))
    for i in range(200):
        note(h.apply(client_id=5, seq=i + 1, put=rpc_pb2.PutRequest(
            key=b"a/%03d" % (i % 70), value=b"v%d" % i * (i % 7), lease=lease if i % 3 == 0 else 0, prev_kv=i % 2 == 0)))
    for i in range(20):
        ops = [_put_op(b"b/%03d" % (i * 10 + j), b"t%d" % j, lease=78 if j % 4 == 0 else 0) for j in range(10)]
        note(h.apply(txn=rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(key=b"a/001", target=rpc_pb2.Compare.VERSION, result=rpc_pb2.Compare.GREATER)],
            success=ops, failure=ops[:1])))
    note(h.apply(txn=rpc_pb2.TxnRequest(success=[
        _put_op(b"c/1", b"x"),
        rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"b/05", range_end=b"b/10", prev_kv=True)),
        rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"b/", range_end=b"b0")),
        _put_op(b"b/055", b"again"),
    ])))
    note(h.delete(b"a/010", b"a/030", prev_kv=True))
    note(h.delete(b"nothing/", b"nothing0"))
    note(h.delete(b"a/050"))
    note(h.apply(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=lease)))
    note(h.apply(compaction=rpc_pb2.CompactionRequest(revision=150)))
    note(h.apply_many(*[_request(b"d/%d" % i) for i in range(16)])[-1])
    note(h.delete(b"b/", b"\0"))
    note(h.apply(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=78)))


def _request(key: bytes) -> internal_pb2.InternalRequest:
    return internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=key, value=key * 3))


def test_a_mixed_workload_stores_the_same_bytes(tmp_path: Path) -> None:
    h = Harness(tmp_path / "node")
    digest = hashlib.sha256()
    _workload(h, digest)
    env = h.store.env
    with env.read() as txn:
        for name in STATE_DBS:
            for key, raw in txn.raw.cursor(db=env.db(name)):
                digest.update(b"%s\0%d\0%s%d\0%s" % (name.encode(), len(key), key, len(raw), raw))
        digest.update(repr(h.store.hash_kv()).encode())
    h.store.close()
    assert digest.hexdigest() == DIGEST
