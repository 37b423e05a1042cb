"""``--experimental-leader-lease-reads`` on real processes: the leader answers linearizable reads under its
lease (no heartbeat round each), every read sees the write acknowledged before it, and a leader paused past
its lease while another took over serves nothing stale when it wakes.

The safety argument is in ``raftkv/server/node/read_lease.py``; the simulator runs the lease through every
fault profile and catches a lease that is too long (``tests/sim``). This test shows the flag works for real.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from raftkv.localcluster import LocalCluster
from raftkv.proto import rpc_pb2
from tests.cluster.conftest import Members, metric, start_cluster, wait_for


@pytest.fixture
def leased(tmp_path: Path) -> Iterator[LocalCluster]:
    with start_cluster(tmp_path / "cluster", extra_args=["--experimental-leader-lease-reads"]) as c:
        yield c


def _get(members: Members, name: str, key: bytes) -> bytes | None:
    """A linearizable read on ``name``; None while it cannot answer (deposed, electing)."""
    try:
        got = members.kv(name).Range(rpc_pb2.RangeRequest(key=key), timeout=5)
    except grpc.RpcError:
        return None
    return got.kvs[0].value if got.kvs else b""


def test_the_leader_serves_reads_under_its_lease_and_each_sees_the_write_before_it(
    leased: LocalCluster,
) -> None:
    members = Members(leased)
    try:
        leader = leased.wait_ready()
        for i in range(30):
            members.kv(leader).Put(rpc_pb2.PutRequest(key=b"k", value=b"v%d" % i), timeout=10)
            assert _get(members, leader, b"k") == b"v%d" % i
        served = metric(leased, leader, "raftkv_lease_reads_total")
        rounds = metric(leased, leader, "raftkv_read_index_rounds_total")
        assert served >= 20, (served, rounds)  # the first read (and each renewal) takes a round
        assert rounds < 15, (served, rounds)
    finally:
        members.close()


def test_a_leader_paused_past_its_lease_serves_nothing_stale_when_it_wakes(leased: LocalCluster) -> None:
    members = Members(leased)
    try:
        old = leased.wait_ready()
        members.kv(old).Put(rpc_pb2.PutRequest(key=b"k", value=b"before"), timeout=10)
        assert _get(members, old, b"k") == b"before"  # it holds a lease now
        leased.pause_member(old)
        try:
            new = str(wait_for(lambda: (n := leased.leader_name()) not in (None, old) and n, 30, "a new leader"))
            wait_for(lambda: _put(members, new, b"after"), 30, f"a put through {new}")
        finally:
            leased.resume_member(old)
        value = wait_for(lambda: _get(members, old, b"k"), 30, f"a linearizable read on {old}")
        assert value == b"after", f"{old} served {value!r} after its successor acknowledged b'after'"
    finally:
        members.close()


def _put(members: Members, name: str, value: bytes) -> bool:
    try:
        members.kv(name).Put(rpc_pb2.PutRequest(key=b"k", value=value), timeout=5)
    except grpc.RpcError:
        return False
    return True
