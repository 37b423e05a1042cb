"""Members killed with SIGKILL again and again during a write load lose no acknowledged write: one at a
time, and then all at once, so that every member restarts from its own disk alone (its applies are not
flushed, its log is: it replays the log from its stored applied index; ``raftkv/storage/README.md``)."""

from __future__ import annotations

import random
import threading

import grpc

from raftkv.localcluster import LocalCluster
from raftkv.proto import rpc_pb2
from tests.cluster.conftest import Members, wait_for

ROUNDS = 4


def test_repeated_kill9_loses_no_acknowledged_write(cluster: LocalCluster, members: Members) -> None:
    rng = random.Random(7)
    acked: list[bytes] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(worker: int) -> None:
        i = 0
        while not stop.is_set():
            key = f"/durable/{worker}/{i:06d}".encode()
            for name in rng.sample(cluster.names, len(cluster.names)):
                if not cluster.is_running(name):
                    continue
                try:
                    members.kv(name).Put(rpc_pb2.PutRequest(key=key, value=key), timeout=2)
                except (grpc.RpcError, ValueError):
                    continue
                with lock:
                    acked.append(key)
                break
            i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(ROUNDS):
            before = len(acked)
            wait_for(lambda: len(acked) >= before + 30, 30, "writes to flow")
            victim = rng.choice(cluster.names)
            cluster.kill_member(victim)
            before = len(acked)
            wait_for(lambda: len(acked) >= before + 30, 30, f"writes to flow with {victim} down")
            cluster.start_member(victim)
            cluster.wait_member_ready(victim, timeout=30)
        before = len(acked)
        wait_for(lambda: len(acked) >= before + 30, 30, "writes to flow")
        for name in cluster.names:
            cluster.kill_member(name)
        for name in cluster.names:
            cluster.start_member(name)
        for name in cluster.names:
            cluster.wait_member_ready(name, timeout=30)
        before = len(acked)
        wait_for(lambda: len(acked) >= before + 30, 30, "writes to flow after every member was killed at once")
    finally:
        stop.set()
        for t in threads:
            t.join()

    for name in cluster.names:
        members.forget(name)
    leader = cluster.wait_ready()
    revision = members.revision(leader)
    for name in cluster.names:
        wait_for(lambda n=name: members.revision(n) >= revision, 30, f"{name} to catch up")
    hashes = {name: members.hash_at(name, revision) for name in cluster.names}
    assert len(set(hashes.values())) == 1, f"state machines diverged: {hashes}"
    for name in cluster.names:
        missing = members.missing(name, b"/durable/", acked)
        assert not missing, f"{name}: {len(missing)} acknowledged writes lost, first {missing[:3]}"
