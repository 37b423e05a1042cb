"""A member that falls behind past the compacted log catches up from a streamed snapshot."""

from __future__ import annotations

from pathlib import Path

from raftkv.proto import rpc_pb2
from tests.cluster.conftest import Members, start_cluster, wait_for


def test_stopped_follower_catches_up_from_snapshot(tmp_path: Path) -> None:
    with start_cluster(tmp_path / "c", extra_args=["--snapshot-count", "40", "--snapshot-catchup-entries", "10"]) as cluster:
        members = Members(cluster)
        leader = cluster.wait_ready()
        lagging = next(n for n in cluster.names if n != leader)
        cluster.stop_member(lagging)
        members.forget(lagging)
        for i in range(300):
            members.kv(leader).Put(rpc_pb2.PutRequest(key=f"/snap/{i:04d}".encode(), value=b"x" * 200), timeout=5)
        revision = members.revision(leader)
        cluster.start_member(lagging)
        wait_for(lambda: members.revision(lagging) >= revision, 30, f"{lagging} to catch up")
        assert "installed a snapshot" in cluster.log_path(lagging).read_text()
        hashes = {name: members.hash_at(name, revision) for name in cluster.names}
        assert len(set(hashes.values())) == 1, hashes
        members.close()
