"""Each request that once took every member down, on a fresh three-member cluster: it gets its answer, and
every member is alive and serving afterwards, and again after the whole cluster restarts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from raftkv.localcluster import LocalCluster
from raftkv.proto import rpc_pb2, rpc_pb2_grpc
from tests.api.conftest import start_cluster

from .crashers import CRASHERS, Crasher

pytestmark = pytest.mark.slow


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with start_cluster("raftkv", tmp_path) as cluster:
        yield cluster


def assert_every_member_serves(cluster: LocalCluster, round_: str) -> None:
    """Every member is running, takes a write and reads back every write made through every member."""
    assert cluster.running() == cluster.names, f"members down: {set(cluster.names) - set(cluster.running())}"
    for name in cluster.names:
        url = cluster.client_url(name)
        with cluster.client_config([url]).channel(url) as channel:
            key = f"/served/{round_}/{name}".encode()
            rpc_pb2_grpc.KVStub(channel).Put(rpc_pb2.PutRequest(key=key, value=b"ok"), timeout=20)
    for name in cluster.names:
        url = cluster.client_url(name)
        with cluster.client_config([url]).channel(url) as channel:
            found = rpc_pb2_grpc.KVStub(channel).Range(
                rpc_pb2.RangeRequest(key=b"/served/", range_end=b"/served0"), timeout=20
            )
        keys = {kv.key for kv in found.kvs}
        assert {f"/served/{round_}/{n}".encode() for n in cluster.names} <= keys, (name, keys)


def _channel(cluster: LocalCluster) -> grpc.Channel:
    url = cluster.client_url(cluster.wait_ready())  # the leader: the entry would be proposed at once
    return cluster.client_config([url]).channel(url)


@pytest.mark.parametrize("crasher", CRASHERS, ids=lambda c: c.name)
def test_crasher_is_answered_and_the_cluster_survives(fresh_cluster: LocalCluster, crasher: Crasher) -> None:
    cluster = fresh_cluster
    with _channel(cluster) as channel:
        answers = [step.call(channel) for step in crasher.steps]
    assert answers[-1] == crasher.raftkv
    assert_every_member_serves(cluster, "after")
    for name in cluster.names:
        cluster.stop_member(name)
    cluster.start()
    for name in cluster.names:
        cluster.wait_member_ready(name, timeout=30)
    assert_every_member_serves(cluster, "restarted")
    for name in cluster.names:
        log = cluster.log_path(name).read_text(errors="replace")
        assert "Traceback" not in log, f"{name} logged a traceback:\n{log[-3000:]}"
