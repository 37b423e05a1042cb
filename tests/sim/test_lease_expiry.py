"""A lease kept alive through a failover is not revoked by the old leader's stale expiry decision.

The production members run in the simulator. A client keeps a lease alive through the followers, as a
service registration does. The leader's disk hangs for a few seconds in the middle of a write: its Raft loop
waits for the write, its followers elect a new leader, which extends every lease on taking office and then
renews this one. Meanwhile the old leader's expiry clock, which no keep-alive reached, ran out and it decided
to revoke the lease. When its disk comes back it learns of the new leader in the same turn as its revoke
reaches its core. Once, that revoke was forwarded to the new leader and committed: the keys vanished seconds
before the TTL the client had just been promised (a 5-member fault run showed it: lease keys read absent
0.1 s after a keep-alive answered TTL 5). The history's lease checker calls that an early expiry; the
planted bug ``expiry-by-successor`` brings the old behaviour back to show that it does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from raftkv import errors
from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.server.backend import ClientSession
from raftkv.sim.cluster import Cluster, SimOptions
from raftkv.sim.loop import finish
from raftkv.sim.member import SimMember
from raftkv.sim.schedule import Schedule

TTL = 2  # the shortest lease at the default 1 s election timeout
STALL = 4.0  # seconds the leader's disk hangs: long enough for an election and a renewal on the new leader


async def _until(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := condition()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
    return value


async def _keep_alive(cluster: Cluster, members: list[SimMember], lease_id: int) -> None:
    """Renew every 0.3 s through each follower in turn; every answer is checked against the history."""
    loop = asyncio.get_running_loop()
    turn = 0
    while True:
        await asyncio.sleep(0.3)
        member = members[turn % len(members)]
        turn += 1
        if member.node is None:
            continue
        started = loop.time()
        try:
            ttl = await member.node.lease_keep_alive(lease_id, 1.0)
        except errors.EtcdException:
            continue  # no leader reachable yet: the next round tries again
        cluster.history.check_lease_answer("keep-alive", member.name, lease_id, ttl > 0, started)
        if ttl > 0:
            cluster.history.lease_renewed(lease_id, started)


async def _scenario(cluster: Cluster) -> None:
    cluster.boot()
    loop = asyncio.get_running_loop()
    leader = await _until(cluster.leader, 10, "a leader")
    assert isinstance(leader, SimMember) and leader.node is not None
    followers = [m for m in cluster.current_members() if m is not leader]
    started = loop.time()
    grant = internal_pb2.InternalRequest(lease_grant=rpc_pb2.LeaseGrantRequest(TTL=TTL))
    result = await leader.node.propose(grant, ClientSession(), 5.0)
    lease_id = result.lease_grant.ID
    cluster.history.lease_granted(lease_id, result.lease_grant.TTL, started)
    put = rpc_pb2.PutRequest(key=b"svc/a", value=b"10.0.0.1:80", lease=lease_id)
    await leader.node.propose(internal_pb2.InternalRequest(put=put), ClientSession(), 5.0)
    keeper = asyncio.ensure_future(_keep_alive(cluster, followers, lease_id))
    await asyncio.sleep(1.0)  # renewed a few times on the first leader

    # The leader's disk hangs in the middle of a write; its loop waits for it.
    leader.disk.stall_next_write(STALL)
    stalled_put = rpc_pb2.PutRequest(key=b"svc/b", value=b"10.0.0.2:80")
    write = asyncio.ensure_future(leader.node.propose(internal_pb2.InternalRequest(put=stalled_put), ClientSession(), 10))
    new_leader = await _until(
        lambda: (lid := cluster.raft.current_leader()) and lid != leader.id, STALL, "a new leader"
    )
    assert new_leader
    await asyncio.sleep(STALL + 2 * TTL)  # the old leader's disk came back long ago
    keeper.cancel()
    await asyncio.gather(write, keeper, return_exceptions=True)

    # Renewed all along, so alive: on every member, with its key.
    for member in cluster.current_members():
        assert member.node is not None
        assert lease_id in member.node.lease_ids(), f"lease gone on {member.name}"


def leader_name(caplog: pytest.LogCaptureFixture) -> str:
    """The member that led first (it said so first)."""
    first = next(r.getMessage() for r in caplog.records if "became leader" in r.getMessage())
    return first.split(":")[0]


def _run(options: SimOptions) -> tuple[Cluster, str | None]:
    cluster = Cluster(Schedule(seed=7, nodes=3, clients=0), options)
    loop = cluster.loop
    try:
        loop.run_until_complete(_scenario(cluster))
    except RuntimeError:
        pass  # stopped by a recorded failure
    finally:
        failure = loop.failure
        finish(loop, [life for member in cluster.members.values() for life in member.all_lives])
    return cluster, failure


def test_the_old_leaders_expiry_decision_is_not_carried_out_by_its_successor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="raftkv.node")
    cluster, failure = _run(SimOptions(keep_trace=60))
    if failure is not None:
        pytest.fail(failure + "\n" + "\n".join(cluster.recent[-60:]))
    # The race really happened: the old leader decided the expiry, and dropped its revoke.
    name = leader_name(caplog)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{name}: ")]
    assert any("revoking expired lease" in line for line in said), said
    assert any("drops a request it made as the leader of term" in line for line in said), said


def test_a_revoke_carried_out_by_the_successor_is_caught(caplog: pytest.LogCaptureFixture) -> None:
    """The planted bug forwards the old leader's revoke, as raftkv once did: the checker calls it early."""
    caplog.set_level(logging.CRITICAL, logger="raftkv")
    _, failure = _run(SimOptions(planted_bug="expiry-by-successor"))
    assert failure is not None and "expired early" in failure, failure
