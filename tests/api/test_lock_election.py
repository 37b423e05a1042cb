"""The ``v3lockpb.Lock`` and ``v3electionpb.Election`` services, from a Python gRPC client, interoperating with
``etcdctl lock`` and ``etcdctl elect`` (which use the client-side recipes over KV, Lease and Watch), against
etcd as well as raftkv: both must behave the same."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import grpc
import pytest

from raftkv.localcluster import LocalCluster
from raftkv.proto import rpc_pb2, rpc_pb2_grpc, v3election_pb2, v3election_pb2_grpc, v3lock_pb2, v3lock_pb2_grpc

from .etcdctl import ETCDCTL, poll


@pytest.fixture
def channel(cluster: LocalCluster) -> Iterator[grpc.Channel]:
    url = cluster.endpoints[-1]
    with cluster.client_config([url]).channel(url) as opened:
        yield opened


def grant(channel: grpc.Channel, ttl: int = 30) -> int:
    return rpc_pb2_grpc.LeaseStub(channel).LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=10).ID


def keys_under(channel: grpc.Channel, prefix: bytes) -> list[bytes]:
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    found = rpc_pb2_grpc.KVStub(channel).Range(rpc_pb2.RangeRequest(key=prefix, range_end=end), timeout=10)
    return [kv.key for kv in found.kvs]


def etcdctl(cluster: LocalCluster, *args: str) -> subprocess.Popen[str]:
    """A long-running etcdctl (lock or elect) on the cluster's first member."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env = {**inherited, **cluster.env(), "ETCDCTL_ENDPOINTS": cluster.endpoints[0]}
    return subprocess.Popen([ETCDCTL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def first_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return process.stdout.readline().strip()


def interrupt(process: subprocess.Popen[str]) -> str:
    """SIGINT (etcdctl then unlocks or resigns) and wait; returns what it printed on stderr."""
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    return err


def test_lock_is_exclusive_and_passes_in_order(cluster: LocalCluster, channel: grpc.Channel, prefix: str) -> None:
    locks = v3lock_pb2_grpc.LockStub(channel)
    name = f"{prefix}lock".encode()
    first, second = grant(channel), grant(channel)
    held = locks.Lock(v3lock_pb2.LockRequest(name=name, lease=first), timeout=10)
    assert held.key == name + b"/" + f"{first:x}".encode()
    assert held.header.revision > 0

    waiting = locks.Lock.future(v3lock_pb2.LockRequest(name=name, lease=second), timeout=30)
    poll(lambda: True if len(keys_under(channel, name + b"/")) == 2 else None, 10, "the second waiter's key")
    assert not waiting.done()
    again = locks.Lock(v3lock_pb2.LockRequest(name=name, lease=first), timeout=10)  # the holder keeps its place
    assert again.key == held.key

    locks.Unlock(v3lock_pb2.UnlockRequest(key=held.key), timeout=10)
    assert waiting.result().key == name + b"/" + f"{second:x}".encode()


def test_a_waiter_that_gives_up_leaves_the_queue(cluster: LocalCluster, channel: grpc.Channel, prefix: str) -> None:
    locks = v3lock_pb2_grpc.LockStub(channel)
    name = f"{prefix}lock".encode()
    holder = locks.Lock(v3lock_pb2.LockRequest(name=name, lease=grant(channel)), timeout=10)
    with pytest.raises(grpc.RpcError) as gave_up:
        locks.Lock(v3lock_pb2.LockRequest(name=name, lease=grant(channel)), timeout=1)
    assert gave_up.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    poll(lambda: True if keys_under(channel, name + b"/") == [holder.key] else None, 10, "the waiter's key to go")


def test_lock_errors(cluster: LocalCluster, channel: grpc.Channel, prefix: str) -> None:
    """etcd runs the recipe through a client of its own: KV errors come back with their text, code UNKNOWN."""
    locks = v3lock_pb2_grpc.LockStub(channel)
    with pytest.raises(grpc.RpcError) as no_lease:
        locks.Lock(v3lock_pb2.LockRequest(name=f"{prefix}lock".encode(), lease=0x1234), timeout=10)
    assert (no_lease.value.code(), no_lease.value.details()) == (  # type: ignore[attr-defined]
        grpc.StatusCode.UNKNOWN, "etcdserver: requested lease not found")


def test_service_lock_and_etcdctl_lock_exclude_each_other(cluster: LocalCluster, channel: grpc.Channel,
                                                          prefix: str) -> None:
    locks = v3lock_pb2_grpc.LockStub(channel)
    name = f"{prefix}shared"
    held = locks.Lock(v3lock_pb2.LockRequest(name=name.encode(), lease=grant(channel)), timeout=10)
    waiter = etcdctl(cluster, "lock", name)
    try:
        poll(lambda: True if len(keys_under(channel, f"{name}/".encode())) == 2 else None, 10, "etcdctl to queue")
        assert waiter.poll() is None
        locks.Unlock(v3lock_pb2.UnlockRequest(key=held.key), timeout=10)
        got = first_line(waiter)  # etcdctl prints the lock's key once it holds it
        assert got.startswith(f"{name}/") and got.encode() != held.key
        taking = locks.Lock.future(v3lock_pb2.LockRequest(name=name.encode(), lease=grant(channel)), timeout=30)
        poll(lambda: True if len(keys_under(channel, f"{name}/".encode())) == 2 else None, 10, "our waiter's key")
        assert not taking.done()
        interrupt(waiter)  # etcdctl unlocks on SIGINT
        assert taking.result().key.startswith(f"{name}/".encode())
    finally:
        waiter.kill()
        waiter.communicate()


def test_election_campaign_leader_proclaim_observe_resign(cluster: LocalCluster, channel: grpc.Channel,
                                                          prefix: str) -> None:
    elections = v3election_pb2_grpc.ElectionStub(channel)
    name = f"{prefix}election".encode()
    with pytest.raises(grpc.RpcError) as nobody:
        elections.Leader(v3election_pb2.LeaderRequest(name=name), timeout=10)
    assert (nobody.value.code(), nobody.value.details()) == (  # type: ignore[attr-defined]
        grpc.StatusCode.UNKNOWN, "election: no leader")
    observed = elections.Observe(v3election_pb2.LeaderRequest(name=name), timeout=60)

    first = elections.Campaign(v3election_pb2.CampaignRequest(name=name, lease=grant(channel), value=b"one"),
                               timeout=10).leader
    assert first.key == name + b"/" + f"{first.lease:x}".encode() and first.rev > 0
    assert next(observed).kv.value == b"one"
    assert elections.Leader(v3election_pb2.LeaderRequest(name=name), timeout=10).kv.value == b"one"

    second_lease = grant(channel)
    second = elections.Campaign.future(
        v3election_pb2.CampaignRequest(name=name, lease=second_lease, value=b"two"), timeout=30)
    poll(lambda: True if len(keys_under(channel, name + b"/")) == 2 else None, 10, "the second candidate")
    assert not second.done()
    with pytest.raises(grpc.RpcError) as not_leader:
        stale = v3election_pb2.LeaderKey(name=name, key=first.key, rev=first.rev + 1000, lease=first.lease)
        elections.Proclaim(v3election_pb2.ProclaimRequest(leader=stale, value=b"x"), timeout=10)
    assert (not_leader.value.code(), not_leader.value.details()) == (  # type: ignore[attr-defined]
        grpc.StatusCode.UNKNOWN, "election: not leader")
    with pytest.raises(grpc.RpcError) as missing:
        elections.Proclaim(v3election_pb2.ProclaimRequest(value=b"x"), timeout=10)
    assert missing.value.details() == '"leader" field must be provided'  # type: ignore[attr-defined]

    elections.Proclaim(v3election_pb2.ProclaimRequest(leader=first, value=b"one'"), timeout=10)
    assert next(observed).kv.value == b"one'"
    elections.Resign(v3election_pb2.ResignRequest(leader=first), timeout=10)
    assert second.result().leader.lease == second_lease
    now = next(observed)
    assert now.kv.value == b"two" and now.kv.lease == second_lease
    observed.cancel()


def test_service_campaign_and_etcdctl_elect_take_turns(cluster: LocalCluster, channel: grpc.Channel,
                                                       prefix: str) -> None:
    elections = v3election_pb2_grpc.ElectionStub(channel)
    name = f"{prefix}shared"
    candidate = etcdctl(cluster, "elect", name, "from-etcdctl")
    observer = etcdctl(cluster, "elect", "-l", name)
    try:
        assert first_line(candidate).startswith(f"{name}/")  # elected: etcdctl prints key, then value
        assert first_line(candidate) == "from-etcdctl"
        leader = elections.Leader(v3election_pb2.LeaderRequest(name=name.encode()), timeout=10)
        assert leader.kv.value == b"from-etcdctl"
        assert first_line(observer).startswith(f"{name}/") and first_line(observer) == "from-etcdctl"

        ours = elections.Campaign.future(
            v3election_pb2.CampaignRequest(name=name.encode(), lease=grant(channel), value=b"from-service"),
            timeout=30)
        poll(lambda: True if len(keys_under(channel, f"{name}/".encode())) == 2 else None, 10, "our candidate")
        assert not ours.done()
        interrupt(candidate)  # etcdctl resigns on SIGINT
        won = ours.result().leader
        assert first_line(observer) == won.key.decode() and first_line(observer) == "from-service"
        elections.Resign(v3election_pb2.ResignRequest(leader=won), timeout=10)
    finally:
        for process in (candidate, observer):
            process.kill()
            process.communicate()
