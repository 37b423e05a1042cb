"""LocalCluster and raftkv.testing: process management through files, failures, membership."""

from __future__ import annotations

from pathlib import Path

from raftkv.localcluster import LocalCluster
from raftkv.testing import ClusterHandle, running_cluster
from tests.client.conftest import SERVER_KIND


def test_state_lives_in_files_so_another_process_can_manage_the_cluster(cluster: ClusterHandle) -> None:
    again = LocalCluster.open(cluster.cluster.base_dir)
    assert again.kind == SERVER_KIND and again.endpoints == cluster.endpoints
    assert again.running() == cluster.names
    for name in cluster.names:
        assert Path(again.log_path(name)).exists()
        assert int((again.member_dir(name) / "member.pid").read_text()) == again.pid(name)
    env = again.env()
    assert env["KVCTL_ENDPOINTS"] == env["ETCDCTL_ENDPOINTS"] == ",".join(cluster.endpoints)
    assert Path(env["ETCDCTL_CACERT"]).exists() and Path(env["KVCTL_KEY"]).exists()


def test_paused_member_is_not_ready_until_resumed(cluster: ClusterHandle) -> None:
    victim = next(n for n in cluster.names if n != cluster.leader())
    cluster.cluster.pause_member(victim)
    try:
        assert cluster.cluster.status(victim, timeout=0.3) is None
        assert cluster.cluster.is_running(victim)
    finally:
        cluster.cluster.resume_member(victim)
    cluster.cluster.wait_member_ready(victim, 10)


def test_single_member_cluster_from_running_cluster_grows_and_shrinks(tmp_path: Path) -> None:
    with running_cluster(size=1, kind="raftkv", base_dir=tmp_path) as handle:
        with handle.client() as client:
            client.put("k", "v")
            added = handle.cluster.add_member()
            handle.cluster.wait_member_ready(added, 20)
            assert len(client.member_list()) == 2
            handle.cluster.remove_member(added)
            assert [m.name for m in client.member_list()] == ["n1"]
        handle.stop("n1")
        handle.restart_all()
        with handle.client() as client:
            assert client.get("k").value == b"v"  # type: ignore[union-attr]
    assert not LocalCluster.open(tmp_path).running()
