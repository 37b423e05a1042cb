"""A serving member has frozen its start-up objects out of garbage collection and reports the collector's
pauses on its metrics page (``raftkv/server/heap.py`` says why)."""

from __future__ import annotations

from raftkv.localcluster import LocalCluster
from raftkv.proto import rpc_pb2
from tests.cluster.conftest import Members, metric, wait_for


def test_members_freeze_start_up_objects_and_count_collector_pauses(cluster: LocalCluster, members: Members) -> None:
    leader = cluster.wait_ready()
    for name in cluster.names:
        # Start-up builds far more than ten thousand objects (modules, gRPC, protobuf descriptors).
        wait_for(lambda n=name: metric(cluster, n, "raftkv_gc_frozen_objects") > 10_000, 30, f"{name} frozen")
    before = metric(cluster, leader, "raftkv_gc_pause_seconds_total")
    for i in range(300):
        members.kv(leader).Put(rpc_pb2.PutRequest(key=b"k%d" % i, value=b"v" * 100), timeout=10)
    # Serving allocates: the youngest generation is collected along the way, and each pause is counted.
    assert metric(cluster, leader, "raftkv_gc_pause_seconds_total") > before
    metric(cluster, leader, "raftkv_gc_full_collections_total")  # exported too (raises if not)
