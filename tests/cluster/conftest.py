"""Real three-member raftkv clusters (processes, LMDB files, mutual TLS) for the node-level tests."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from raftkv.localcluster import LocalCluster
from raftkv.proto import rpc_pb2, rpc_pb2_grpc

ELECTION_MS = 1000


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")


def lead(cluster: LocalCluster, name: str) -> None:
    """Hand the leadership to ``name`` (MoveLeader, answered by the leader)."""
    target = cluster.member_id(name)
    for _ in range(3):
        leader = cluster.wait_ready(timeout=30)
        if leader == name:
            return
        url = cluster.client_url(leader)
        with cluster.client_config([url]).channel(url) as channel:
            try:
                rpc_pb2_grpc.MaintenanceStub(channel).MoveLeader(
                    rpc_pb2.MoveLeaderRequest(targetID=target), timeout=20)
            except grpc.RpcError:
                continue  # the leadership moved meanwhile: ask the new leader
        try:
            wait_for(lambda: cluster.leader_name() == name, 10, f"{name} to lead")
            return
        except AssertionError:
            continue
    raise AssertionError(f"{name} did not become the leader")


class Members:
    """Blocking stubs per member, over the cluster's client certificate."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self._channels: dict[str, grpc.Channel] = {}

    def channel(self, name: str) -> grpc.Channel:
        if name not in self._channels:
            url = self.cluster.client_url(name)
            self._channels[name] = self.cluster.client_config([url]).channel(url)
        return self._channels[name]

    def kv(self, name: str) -> rpc_pb2_grpc.KVStub:
        return rpc_pb2_grpc.KVStub(self.channel(name))

    def membership(self, name: str) -> rpc_pb2_grpc.ClusterStub:
        return rpc_pb2_grpc.ClusterStub(self.channel(name))

    def maintenance(self, name: str) -> rpc_pb2_grpc.MaintenanceStub:
        return rpc_pb2_grpc.MaintenanceStub(self.channel(name))

    def forget(self, name: str) -> None:
        channel = self._channels.pop(name, None)
        if channel is not None:
            channel.close()

    def close(self) -> None:
        for name in list(self._channels):
            self.forget(name)

    def hash_at(self, name: str, revision: int) -> int:
        return self.maintenance(name).HashKV(rpc_pb2.HashKVRequest(revision=revision), timeout=5).hash

    def missing(self, name: str, prefix: bytes, keys: list[bytes]) -> list[bytes]:
        """Those of ``keys`` (all under ``prefix``) that member ``name`` does not hold, read locally."""
        range_end = prefix[:-1] + bytes([prefix[-1] + 1])
        got = self.kv(name).Range(
            rpc_pb2.RangeRequest(key=prefix, range_end=range_end, keys_only=True, serializable=True), timeout=10
        )
        present = {kv.key for kv in got.kvs}
        return [k for k in keys if k not in present]

    def revision(self, name: str) -> int:
        """The member's applied revision, or -1 while it does not answer (e.g. still starting)."""
        try:
            return self.maintenance(name).Status(rpc_pb2.StatusRequest(), timeout=2).header.revision
        except grpc.RpcError:
            return -1


def metric(cluster: LocalCluster, name: str, metric_name: str) -> float:
    """One unlabelled sample of member ``name``'s Prometheus page."""
    with urllib.request.urlopen(f"{cluster.metrics_url(name)}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(metric_name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} exports no {metric_name}")


def start_cluster(base: Path, election_ms: int = ELECTION_MS, **kwargs: object) -> LocalCluster:
    cluster = LocalCluster(base, size=3, kind="raftkv", tls=True, election_ms=election_ms, **kwargs)  # type: ignore[arg-type]
    cluster.start()
    try:
        cluster.wait_ready(timeout=30, all_members=True)
    except BaseException:
        cluster.stop()  # a member that failed to start must not leave the others running after the test
        raise
    return cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with start_cluster(tmp_path / "cluster") as c:
        yield c


@pytest.fixture
def members(cluster: LocalCluster) -> Iterator[Members]:
    m = Members(cluster)
    yield m
    m.close()
