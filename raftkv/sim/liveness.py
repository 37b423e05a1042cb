"""Liveness after the storm: with the network healed and every member up, the cluster must make progress.

Safety alone is easy to satisfy (a cluster that never commits anything is safe). So once the fault phase
ends, a leader must be elected and a fresh proposal committed within a bounded simulated time, and then
every member must catch up (through the log or a snapshot) to identical state machines.
"""

from __future__ import annotations

from collections.abc import Callable

from raftkv.sim.cluster import TICK, Cluster
from raftkv.sim.statemachine import decode_put


class LivenessFailure(AssertionError):
    """The cluster did not make progress in time although a majority was up and connected."""


def run_until(cluster: Cluster, deadline: int, done: Callable[[], bool] = lambda: False) -> bool:
    """Run events up to virtual time ``deadline``; True as soon as ``done()`` holds."""
    q = cluster.queue
    while True:
        if done():
            return True
        t = q.next_time()
        if t is None or t > deadline:
            return False
        q.run_next()


def await_commit(cluster: Cluster, bound: int) -> int:
    """Propose a probe through whoever leads until one commits; return its index. Fails after ``bound``."""
    data = cluster.workload.probe()
    key, value = decode_put(data)
    deadline = cluster.queue.now + bound
    proposed_to: tuple[int, int] | None = None  # (leader id, life) the probe was last handed to

    def committed() -> bool:
        return any(n.disk.sm.read(key)[0] == value for n in cluster.live_members())

    while cluster.queue.now <= deadline:
        leader = cluster.leader()
        if leader is not None and proposed_to != (leader.id, leader.life):
            if cluster.propose_on_leader(data):
                proposed_to = (leader.id, leader.life)
        if run_until(cluster, min(deadline, cluster.queue.now + 2 * TICK), committed):
            return max(n.disk.sm.read(key)[1] for n in cluster.live_members())
        if cluster.queue.next_time() is None:
            break
    raise LivenessFailure(f"no proposal committed within {bound} time units of healing; {describe(cluster)}")


def await_convergence(cluster: Cluster, index: int, bound: int) -> None:
    """Every member reaches ``index`` and members at equal applied index have identical state."""
    cluster.workload.running = False
    deadline = cluster.queue.now + bound

    def converged() -> bool:
        live = cluster.live_members()
        return len({n.disk.sm.applied for n in live}) == 1 and live[0].disk.sm.applied >= index

    if not run_until(cluster, deadline, converged):
        raise LivenessFailure(f"members did not converge on index {index} within {bound}; {describe(cluster)}")
    live = cluster.live_members()
    for n in live[1:]:
        if n.disk.sm.kv != live[0].disk.sm.kv:
            raise AssertionError(f"n{n.id} and n{live[0].id} differ at applied index {n.disk.sm.applied}")


def describe(cluster: Cluster) -> str:
    parts = []
    for nid, n in sorted(cluster.nodes.items()):
        if n.raw is None:
            parts.append(f"n{nid}:{'removed' if n.removed else 'down'}")
            continue
        st = n.raw.status()
        parts.append(
            f"n{nid}:{st.soft_state.role.name.lower()} term={st.hard_state.term} commit={st.hard_state.commit} "
            f"applied={n.disk.sm.applied} last={n.disk.storage.last_index()}"
        )
    return f"members={cluster.members()} " + ", ".join(parts)
