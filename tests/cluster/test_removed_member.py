"""A removed member stays removed: after every survivor restarted, the removed member coming back on its old
data is refused and told why, and the survivors carry on (real processes, real mutual TLS)."""

from __future__ import annotations

from pathlib import Path

from raftkv.localcluster import LocalCluster
from raftkv.proto import rpc_pb2
from tests.cluster.conftest import Members, start_cluster, wait_for

REFUSED = "was removed from the cluster"


def _logged(cluster: LocalCluster, name: str, *parts: str) -> bool:
    """Whether a line of ``name``'s log holds every one of ``parts``."""
    lines = cluster.log_path(name).read_text(errors="replace").splitlines()
    return any(all(part in line for part in parts) for line in lines)


def _survivors_carry_on(cluster: LocalCluster, members: Members) -> None:
    """n1 and n2 elect a leader among themselves, take a write, and list only each other."""
    leader = cluster.wait_ready(timeout=30)
    assert leader in ("n1", "n2")
    members.kv(leader).Put(rpc_pb2.PutRequest(key=b"/after", value=b"v"), timeout=10)
    listed = members.membership(leader).MemberList(rpc_pb2.MemberListRequest(), timeout=5).members
    assert sorted(m.name for m in listed) == ["n1", "n2"]


def test_a_removed_member_is_refused_after_every_survivor_restarted(tmp_path: Path) -> None:
    """n3 is down when it is removed, so its data still says it is a voter. n1 and n2 restart, which used to
    forget the removal (kept only in the transport's memory): n3's stream was then heard like a newcomer's.
    Now the removal is in their stores: n3 is refused with the reason, as before a restart."""
    with start_cluster(tmp_path / "c") as cluster:
        members = Members(cluster)
        removed_id = cluster.member_id("n3")
        assert removed_id is not None
        cluster.stop_member("n3")
        leader = cluster.wait_ready()
        members.membership(leader).MemberRemove(rpc_pb2.MemberRemoveRequest(ID=removed_id), timeout=10)
        for name in ("n1", "n2"):
            cluster.stop_member(name)
        members.close()  # channels to the stopped members
        for name in ("n1", "n2"):
            cluster.start_member(name)
        cluster.wait_ready(timeout=30)

        cluster.start_member("n3")
        refused = f"sender {removed_id:x} {REFUSED}"
        wait_for(lambda: _logged(cluster, "n3", "raft stream to", refused), 20, "n3 to be told it was removed")
        wait_for(lambda: any(_logged(cluster, n, "refusing raft stream", refused) for n in ("n1", "n2")), 10,
                 "a survivor to log why it refused n3")

        _survivors_carry_on(cluster, members)
        status = members.maintenance("n3").Status(rpc_pb2.StatusRequest(), timeout=5)
        assert status.leader == 0  # never heard a leader: nobody answers it
        members.close()


def test_a_running_member_that_is_removed_stops_and_its_data_dir_is_refused(tmp_path: Path) -> None:
    """As etcd: a member that applies its own removal says so and stops (a second later), cleanly; left
    running it would serve serializable reads nobody updates. Started again on that data dir, it refuses to
    run and says what to do. The survivors carry on."""
    with start_cluster(tmp_path / "c") as cluster:
        members = Members(cluster)
        removed_id = cluster.member_id("n3")
        assert removed_id is not None
        leader = cluster.wait_ready()
        via = leader if leader != "n3" else "n1"
        members.membership(via).MemberRemove(rpc_pb2.MemberRemoveRequest(ID=removed_id), timeout=10)
        wait_for(lambda: not cluster.is_running("n3"), 20, "n3 to stop once it applied its removal")
        assert _logged(cluster, "n3", "this member was removed from the cluster", "stopping in 1s")
        assert _logged(cluster, "n3", "stopped cleanly")

        cluster.start_member("n3")
        wait_for(lambda: not cluster.is_running("n3"), 20, "n3 to refuse its data dir")
        assert _logged(cluster, "n3", "raftkv: error: member n3", "was removed from the cluster",
                       "remove --data-dir")

        _survivors_carry_on(cluster, members)
        members.close()
