"""A killed leader is announced (its port no longer serves), a paused one is not: real processes, real TLS.

The members' logs say which path a failover took: ``raft peer <id> is gone`` is the transport's report
to the core. Speed is the failover benchmark's business (``python -m jepsen_like failover``); this test
asserts only who reports what, and that a new leader takes over either way.
"""

from __future__ import annotations

from raftkv.localcluster import LocalCluster
from raftkv.proto import rpc_pb2, rpc_pb2_grpc
from tests.cluster.conftest import Members, wait_for


def _gone_reports(cluster: LocalCluster, about: str, member_id: int) -> int:
    line = f"raft peer {member_id:x} is gone"
    return sum(cluster.log_path(n).read_text().count(line) for n in cluster.names if n != about)


def _new_leader(cluster: LocalCluster, old: str) -> str:
    def found() -> str | None:
        leader = cluster.leader_name()
        return leader if leader not in (None, old) else None

    return str(wait_for(found, 30, f"a leader other than {old}"))


def test_a_killed_leader_is_reported_gone_and_a_paused_one_is_not(
    cluster: LocalCluster, members: Members
) -> None:
    paused = cluster.wait_ready()
    paused_id = cluster.member_id(paused)
    assert paused_id is not None
    cluster.pause_member(paused)
    try:
        _new_leader(cluster, paused)
    finally:
        cluster.resume_member(paused)
    assert _gone_reports(cluster, paused, paused_id) == 0, "a paused member was taken for a dead one"

    killed = cluster.wait_ready(timeout=30)
    killed_id = cluster.member_id(killed)
    assert killed_id is not None
    cluster.kill_member(killed)
    members.forget(killed)
    _new_leader(cluster, killed)
    wait_for(lambda: _gone_reports(cluster, killed, killed_id) >= 2, 30,
             "both survivors to report the dead leader gone")


def test_a_keep_alive_sent_to_a_follower_as_the_leader_dies_is_renewed_by_the_next_leader(
    cluster: LocalCluster, members: Members
) -> None:
    """The follower forwards the keep-alive to the leader it knows, which is dead; as etcd's LeaseRenew, it
    asks again until the next leader renews the lease, instead of failing the renewal of a registration."""
    leader = cluster.wait_ready()
    follower = next(n for n in cluster.names if n != leader)
    leases = rpc_pb2_grpc.LeaseStub(members.channel(follower))
    granted = leases.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=10).ID
    renew = rpc_pb2.LeaseKeepAliveRequest(ID=granted)
    assert next(leases.LeaseKeepAlive(iter([renew]), timeout=10)).TTL == 60  # forwarded to the live leader
    cluster.kill_member(leader)
    members.forget(leader)
    assert next(leases.LeaseKeepAlive(iter([renew]), timeout=30)).TTL == 60
    _new_leader(cluster, leader)
