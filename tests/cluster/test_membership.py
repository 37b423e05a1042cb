"""Membership changes on a live cluster: a member added after the log was compacted catches up from a
snapshot that lists it, a removed member stops counting, and a member that was down while another joined
catches up from the newcomer."""

from __future__ import annotations

from pathlib import Path

from raftkv.proto import rpc_pb2
from tests.cluster.conftest import Members, lead, start_cluster, wait_for


def test_member_added_after_compaction_catches_up_then_is_removed(tmp_path: Path) -> None:
    args = ["--snapshot-count", "20", "--snapshot-catchup-entries", "5"]
    with start_cluster(tmp_path / "c", extra_args=args) as cluster:
        members = Members(cluster)
        leader = cluster.wait_ready()
        for i in range(120):
            members.kv(leader).Put(rpc_pb2.PutRequest(key=f"/m/{i:03d}".encode(), value=b"v"), timeout=5)
        newcomer = cluster.add_member()
        revision = members.revision(leader)
        wait_for(lambda: members.revision(newcomer) >= revision, 30, f"{newcomer} to catch up")
        assert len({members.hash_at(n, revision) for n in cluster.names}) == 1
        cluster.remove_member(newcomer)
        members.forget(newcomer)
        leader = cluster.wait_ready()
        members.kv(leader).Put(rpc_pb2.PutRequest(key=b"/m/after", value=b"v"), timeout=5)
        member_list = members.membership(leader).MemberList(rpc_pb2.MemberListRequest(), timeout=5).members
        assert sorted(m.name for m in member_list) == ["n1", "n2", "n3"]
        members.close()


def test_member_down_while_another_joined_catches_up_from_the_newcomer(tmp_path: Path) -> None:
    """n1 is stopped; n4 joins and takes the leadership; n1 restarts with a membership table that lacks n4.
    It must hear n4 and answer it (n4's stream says where it is dialled) to catch up at all: before, its
    transport refused n4's stream as a stranger's, and it never caught up (the simulator found this)."""
    with start_cluster(tmp_path / "c") as cluster:
        members = Members(cluster)
        cluster.stop_member("n1")
        cluster.wait_ready()
        newcomer = cluster.add_member()
        # Four voters with n1 down: no quorum until the newcomer's process serves (seconds on a loaded
        # machine), and the leader may step down meanwhile (check-quorum). Put once it does, to the leader then.
        cluster.wait_member_ready(newcomer, timeout=60)
        leader = cluster.wait_ready(timeout=60)
        for i in range(20):
            members.kv(leader).Put(rpc_pb2.PutRequest(key=f"/late/{i:02d}".encode(), value=b"v"), timeout=10)
        lead(cluster, newcomer)
        cluster.start_member("n1")
        revision = members.revision(newcomer)
        wait_for(lambda: members.revision("n1") >= revision, 30, "n1 to catch up from the newcomer")
        assert members.hash_at("n1", revision) == members.hash_at(newcomer, revision)
        member_list = members.membership("n1").MemberList(rpc_pb2.MemberListRequest(), timeout=5).members
        assert newcomer in {m.name for m in member_list}
        members.close()
