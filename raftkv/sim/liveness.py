"""After the faults stop: the cluster must elect a leader and commit, then every member must converge.

Both are bounded in virtual time, so a liveness bug (a member that never catches up, an election that
never ends) fails the run with a clear message instead of hanging it.
"""

from __future__ import annotations

import asyncio

from raftkv import errors
from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.server.backend import ClientSession
from raftkv.sim.cluster import Cluster

PROBE_KEY = b"probe"


class LivenessFailure(AssertionError):
    """The healed cluster did not make progress (or did not converge) within the bound."""


async def await_commit(cluster: Cluster, bound: float) -> int:
    """A write through some running member succeeds within ``bound`` seconds; returns its revision."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    while loop.time() < deadline:
        for member in cluster.current_members():
            node = member.node
            if node is None or not node.has_leader():
                continue
            req = internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=PROBE_KEY, value=b"probe"))
            try:
                result = await node.propose(req, ClientSession(), 3.0)
            except errors.EtcdException:
                continue
            cluster.history.check_write("probe put", member.name, PROBE_KEY, b"probe", result.put.header.revision)
            return result.put.header.revision
        await asyncio.sleep(0.1)
    raise LivenessFailure(f"no write committed within {bound:.0f}s of healing (members: {_describe(cluster)})")


async def await_convergence(cluster: Cluster, revision: int, bound: float) -> None:
    """Every member of the final configuration runs, has applied at least ``revision``, and all hold the
    same applied index and revision; then each is checked against the history, and refuses every member
    the run removed (however it learned of the removal: applied, restarted since, or from a snapshot)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    while True:
        cluster._refresh_conf()
        members = cluster.current_members()
        nodes = [m.node for m in members]
        if all(n is not None for n in nodes):
            positions = {(n.loop.applied, n.store.revision()) for n in nodes if n is not None}
            if len(positions) == 1 and next(iter(positions))[1] >= revision:
                break
        if loop.time() >= deadline:
            raise LivenessFailure(f"members did not converge within {bound:.0f}s: {_describe(cluster)}")
        await asyncio.sleep(0.1)
    for member in members:
        node = member.node
        assert node is not None
        everything = node.range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0"))
        cluster.history.check_final(member.name, list(everything.kvs), {lease.id for lease in node.store.leases()})
        heard = [m.name for m in cluster.members.values() if m.removed and not node.is_removed(m.id)]
        assert not heard, f"{member.name} would hear {', '.join(heard)}, removed from the cluster"


def _describe(cluster: Cluster) -> str:
    parts = []
    for member in cluster.current_members():
        node = member.node
        if node is None:
            parts.append(f"{member.name} down")
        else:
            position = f"applied={node.loop.applied} rev={node.store.revision()}"
            parts.append(f"{member.name} {position} leader={node.loop.soft.leader:x}")
    return ", ".join(parts)
