"""A request that takes longer to apply than an election timeout does not cost the cluster its leader.

Deleting 60k keys in one DeleteRange is one atomic write transaction that runs for seconds on every member.
Ticks, heartbeats and their answers must keep flowing meanwhile (they need no fsync), or followers would
time out and elect someone else.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from raftkv.localcluster import LocalCluster
from raftkv.proto import rpc_pb2
from tests.cluster.conftest import Members, start_cluster, wait_for

KEYS = 120_000  # twice what `etcdctl check perf --load=m` deletes at its end: outlasts 2 election timeouts
OPS_PER_TXN = 128  # the server's max_txn_ops
PREFIX = b"/long-apply/"
#: Short timeouts, so that the delete outlasts an election timeout by far on any machine.
HEARTBEAT_MS, ELECTION_MS = 50, 250


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """This module's clusters use the short timeouts (the package's ``members`` fixture picks this up)."""
    with start_cluster(tmp_path / "cluster", heartbeat_ms=HEARTBEAT_MS, election_ms=ELECTION_MS) as c:
        yield c


def _fill(members: Members, name: str, start: int) -> None:
    puts = [
        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=PREFIX + b"%06d" % i, value=b"x" * 16))
        for i in range(start, min(start + OPS_PER_TXN, KEYS))
    ]
    members.kv(name).Txn(rpc_pb2.TxnRequest(success=puts), timeout=30)


def _terms(cluster: LocalCluster, members: Members) -> dict[str, tuple[int, int]]:
    """(leader id, raft term) as each member reports it."""
    out = {}
    for name in cluster.names:
        status = members.maintenance(name).Status(rpc_pb2.StatusRequest(), timeout=5)
        out[name] = (status.leader, status.raftTerm)
    return out


def test_deleting_many_keys_in_one_request_keeps_the_leader(
    cluster: LocalCluster, members: Members
) -> None:
    leader = cluster.wait_ready()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda start: _fill(members, leader, start), range(0, KEYS, OPS_PER_TXN)))
    # The claim is about the delete, so start from a settled leader: with 250 ms elections a loaded machine
    # may legitimately elect during the fill, and members learn of it one heartbeat apart.
    def settled() -> dict[str, tuple[int, int]] | None:
        terms = _terms(cluster, members)
        return terms if len(set(terms.values())) == 1 else None

    before = wait_for(settled, 10, "all members to agree on leader and term before the delete")
    leader = cluster.leader_name() or leader

    started = time.monotonic()
    response = members.kv(leader).DeleteRange(
        rpc_pb2.DeleteRangeRequest(key=PREFIX, range_end=PREFIX[:-1] + b"0"), timeout=60
    )
    took = time.monotonic() - started
    assert took > 2 * ELECTION_MS / 1000, f"the delete took only {took:.2f}s: too short to prove anything"

    assert response.deleted == KEYS
    revision = response.header.revision
    wait_for(lambda: all(members.revision(n) >= revision for n in cluster.names), 30, "every member to apply it")
    after = _terms(cluster, members)
    assert after == before, f"leadership changed during the long apply: before {before}, after {after}"
    left = members.kv(leader).Range(rpc_pb2.RangeRequest(key=PREFIX, range_end=PREFIX[:-1] + b"0", count_only=True))
    assert left.count == 0
