"""A transaction of Ranges alone is served as etcd serves it: from a read view after a ReadIndex round, with
no log entry. On a follower it still sees every write acknowledged before it (the round asks the leader's
commit index); the log does not grow, however many are served. Answers equal etcd's: ``tests/api``."""

from __future__ import annotations

from raftkv.localcluster import LocalCluster
from raftkv.proto import rpc_pb2
from tests.cluster.conftest import Members, wait_for

ROUNDS = 20


def _read_only(key: bytes) -> rpc_pb2.TxnRequest:
    cmp = rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.VERSION, result=rpc_pb2.Compare.GREATER, version=0)
    return rpc_pb2.TxnRequest(compare=[cmp], success=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))])


def test_a_read_only_txn_on_a_follower_sees_the_write_before_it_and_adds_no_log_entry(
    cluster: LocalCluster, members: Members
) -> None:
    leader = cluster.wait_ready()
    follower = next(name for name in cluster.names if name != leader)
    for i in range(ROUNDS):
        members.kv(leader).Put(rpc_pb2.PutRequest(key=b"k", value=b"v%d" % i), timeout=10)
        answer = members.kv(follower).Txn(_read_only(b"k"), timeout=10)
        assert answer.succeeded and answer.responses[0].response_range.kvs[0].value == b"v%d" % i
    # Each member announces its name and client URLs through the log once it knows a leader, which on a loaded
    # machine can come after the cluster is ready: wait for those entries, the only others this cluster makes.
    def published() -> bool:
        listed = members.membership(leader).MemberList(rpc_pb2.MemberListRequest(), timeout=10).members
        return len(listed) == len(cluster.names) and all(m.name and m.clientURLs for m in listed)

    wait_for(published, 30, "every member to have published its name and client URLs")
    before = members.maintenance(leader).Status(rpc_pb2.StatusRequest(), timeout=10)
    for name in cluster.names:
        for _ in range(ROUNDS):
            assert members.kv(name).Txn(_read_only(b"k"), timeout=10).header.revision == before.header.revision
    after = members.maintenance(leader).Status(rpc_pb2.StatusRequest(), timeout=10)
    assert after.raftIndex == before.raftIndex, "a read-only transaction went through the log"
