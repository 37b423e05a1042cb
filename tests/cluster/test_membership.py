"""Membership changes on a live cluster: a member added after the log was compacted catches up from a
snapshot that lists it, and a removed member stops counting."""

from __future__ import annotations

from pathlib import Path

from raftkv.proto import rpc_pb2
from tests.cluster.conftest import Members, start_cluster, wait_for


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
