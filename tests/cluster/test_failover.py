"""A leader killed with SIGKILL while writes flow is replaced quickly, and comes back consistent."""

from __future__ import annotations

import threading
import time

import grpc

from raftkv.localcluster import LocalCluster
from raftkv.proto import rpc_pb2
from tests.cluster.conftest import ELECTION_MS, Members, wait_for


def _writer(members: Members, names: list[str], stop: threading.Event, acked: list[bytes]) -> None:
    """Put unique keys round-robin through the given members, remembering the acknowledged ones."""
    i = 0
    while not stop.is_set():
        key = f"/failover/{i:06d}".encode()
        name = names[i % len(names)]
        try:
            members.kv(name).Put(rpc_pb2.PutRequest(key=key, value=b"v"), timeout=2)
            acked.append(key)
        except grpc.RpcError:
            pass
        i += 1


def test_leader_kill_elects_new_leader_and_restarted_member_converges(
    cluster: LocalCluster, members: Members
) -> None:
    leader = cluster.wait_ready()
    followers = [n for n in cluster.names if n != leader]
    stop, acked = threading.Event(), []
    writer = threading.Thread(target=_writer, args=(members, followers, stop, acked))
    writer.start()
    try:
        wait_for(lambda: len(acked) >= 50, 20, "50 acknowledged writes before the kill")
        killed_at = time.monotonic()
        cluster.kill_member(leader)
        members.forget(leader)

        def new_leader() -> str | None:
            found = cluster.leader_name()
            return found if found not in (None, leader) else None

        replacement = wait_for(new_leader, 10, "a new leader")
        elapsed = time.monotonic() - killed_at
        # Followers notice after at most a randomised election timeout in [1, 2) x election_ms, then one
        # pre-vote and one vote round trip on loopback.
        assert elapsed < 2 * ELECTION_MS / 1000 + 0.5, f"new leader {replacement} took {elapsed:.2f}s"
        count = len(acked)
        wait_for(lambda: len(acked) >= count + 50, 20, "writes to continue under the new leader")
    finally:
        stop.set()
        writer.join()

    cluster.start_member(leader)
    revision = members.revision(followers[0])
    wait_for(lambda: members.revision(leader) >= revision, 30, f"{leader} to catch up")
    hashes = {name: members.hash_at(name, revision) for name in cluster.names}
    assert len(set(hashes.values())) == 1, hashes
    missing = members.missing(leader, b"/failover/", acked)
    assert not missing, f"{len(missing)} acknowledged writes missing, first {missing[:3]}"
