"""A simulated cluster: nodes, network, clock, workload and checker wired together, plus fault actions.

The cluster is the ``NodeHooks`` of every node: it routes their messages through the network and their
observations to the checker and the workload. It also keeps the membership view of the run (the newest
applied configuration), resolves fault events against it, and runs membership changes the way an
operator would (propose on the leader; start a new member once its addition is accepted; retire a member
once its removal is applied).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from raftkv.core.rawnode import RawNode, bootstrap_entries
from raftkv.core.types import ConfChange, ConfChangeType, ConfState, Entry, EntryType, ProposalDropped, SnapshotMeta
from raftkv.sim.clock import EventQueue
from raftkv.sim.invariants import Checker
from raftkv.sim.network import Envelope, LinkFaults, Network
from raftkv.sim.node import SimNode
from raftkv.sim.schedule import Fault, Schedule
from raftkv.sim.workload import Workload

TICK = 10  # virtual time units per Raft tick; network latencies are a few units


@dataclass(frozen=True, slots=True)
class SimOptions:
    core_bugs: frozenset[str] = frozenset()
    sim_bugs: frozenset[str] = frozenset()  # "send_before_fsync", "stale_read"
    keep_trace: int = 0  # remember the last N trace lines, for failure reports


class Cluster:
    def __init__(self, schedule: Schedule, options: SimOptions) -> None:
        self.schedule = schedule
        self.options = options
        self._rng = random.Random(schedule.seed)
        self.queue = EventQueue(options.keep_trace)
        self.nodes: dict[int, SimNode] = {}
        self.checker = Checker(self.nodes)
        self.network = Network(self.queue, self._derive_rng(), schedule.link, self._deliver, self._lost)
        self.workload = Workload(
            self.queue,
            self._derive_rng(),
            self._pick_client_node,
            schedule.clients,
            schedule.keys,
            stale_reads="stale_read" in options.sim_bugs,
        )
        self._nemesis_rng = self._derive_rng()
        self._hunting = schedule.hunt > 0
        self.conf = ConfState(voters=frozenset(range(1, schedule.nodes + 1)))
        self._conf_index = schedule.nodes
        self._joined: set[int] = set(self.conf.voters)
        self._next_id = schedule.nodes + 1
        boot = bootstrap_entries([(i, f"n{i}".encode()) for i in range(1, schedule.nodes + 1)])
        for i in range(1, schedule.nodes + 1):
            self._add_node(i).disk.bootstrap(boot)
        for i in range(1, schedule.nodes + 1):
            self._start(self.nodes[i])
        for f in schedule.faults:
            self.queue.schedule(f.at, f"fault {f.kind}{list(f.args)}", lambda f=f: self.apply_fault(f))
        self.workload.start()

    def _derive_rng(self) -> random.Random:
        return random.Random(self._rng.getrandbits(64))

    def _add_node(self, node_id: int) -> SimNode:
        o = self.options
        node = SimNode(node_id, self.queue, self._derive_rng(), self, self.schedule.knobs, o.core_bugs, o.sim_bugs)
        self.nodes[node_id] = node
        self.queue.schedule(self._rng.randint(1, TICK), f"tick n{node_id}", lambda: self._tick(node))
        return node

    def _tick(self, node: SimNode) -> None:
        if node.removed:
            return
        node.tick()
        self.queue.schedule(TICK, f"tick n{node.id}", lambda: self._tick(node))

    def _start(self, node: SimNode) -> None:
        self.checker.restarted(node)
        node.start()

    # -- views ------------------------------------------------------------------------------------------

    def members(self) -> list[int]:
        return sorted(self.conf.members())

    def live_members(self) -> list[SimNode]:
        return [self.nodes[i] for i in self.members() if self.nodes[i].alive]

    def leader(self) -> SimNode | None:
        lid = self.checker.current_leader()
        return self.nodes[lid] if lid else None

    def _pick_client_node(self, rng: random.Random) -> SimNode | None:
        live = self.live_members()
        return rng.choice(live) if live else None

    # -- NodeHooks --------------------------------------------------------------------------------------

    def send(self, env: Envelope) -> None:
        self.checker.sending(self.nodes[env.msg.sender], env.msg)
        self.network.send(env)

    def _deliver(self, env: Envelope) -> None:
        node = self.nodes.get(env.msg.to)
        if node is None or not node.alive:
            self._lost(env)
            return
        node.deliver(env)
        if env.snapshot_data is not None:
            self._snapshot_status(env, True)

    def _lost(self, env: Envelope) -> None:
        if env.snapshot_data is not None:
            self._snapshot_status(env, False)

    def _snapshot_status(self, env: Envelope, ok: bool) -> None:
        """The snapshot stream beside a SNAP finished (or failed): tell the sender, if it still runs."""
        sender, to = self.nodes[env.msg.sender], env.msg.to
        life = sender.life

        def report() -> None:
            if sender.alive and sender.life == life:
                sender.call(lambda raw: raw.report_snapshot(to, ok))

        self.queue.schedule(1, f"snap-status n{sender.id}->{to} {ok}", report)

    def persisted(self, node: SimNode, entries: list[Entry]) -> None:
        self.checker.persisted(node, entries)

    def synced(self, node: SimNode) -> None:
        self.checker.synced(node)

    def applied(self, node: SimNode, entry: Entry) -> None:
        self.checker.applied(node, entry)
        self.workload.applied(node, entry)
        if entry.type == EntryType.CONF_CHANGE and entry.index > self._conf_index:
            self._conf_index = entry.index
            self._membership_changed(node.disk.sm.conf_state)

    def snapshot_installed(self, node: SimNode, meta: SnapshotMeta) -> None:
        self.checker.snapshot_installed(node, meta)

    def read_served(self, node: SimNode, ctx: bytes) -> None:
        self.workload.read_served(node, ctx)

    def observe(self, node: SimNode) -> None:
        before = self.checker.elections
        self.checker.observe(node)
        if self.checker.elections > before and self._hunting:
            rng = self._nemesis_rng
            if rng.randrange(100) < self.schedule.hunt:
                delay = rng.randint(0, self.schedule.hunt_delay)
                life = node.life
                self.queue.schedule(delay, f"hunt n{node.id}", lambda: self._hunt(node, life))

    def _hunt(self, node: SimNode, life: int) -> None:
        """Strike a leader the nemesis picked at its election, if it still leads in that life."""
        if not self._hunting or node.life != life or not self.checker.is_leader(node.id):
            return
        rng = self._nemesis_rng
        if rng.random() < 0.25:
            self._crash(node)
            self.queue.schedule(rng.randint(50, 400), f"restart n{node.id}", lambda: self._revive(node))
            return
        side = {node.id}
        others = [n.id for n in self.live_members() if n.id != node.id]
        if others and rng.random() < 0.5:
            side.add(rng.choice(others))
        self.network.partition(frozenset(side))

    def _revive(self, node: SimNode) -> None:
        if not node.alive and not node.removed:
            self._start(node)

    # -- membership -------------------------------------------------------------------------------------

    def _membership_changed(self, conf: ConfState) -> None:
        self.conf = conf
        self._joined |= conf.members()
        for nid in sorted(self._joined - conf.members()):
            node = self.nodes[nid]
            if not node.removed:
                self._crash(node)
                node.removed = True

    def _propose_conf(self, cc: ConfChange) -> bool:
        return self._on_leader(lambda raw: raw.propose_conf_change(cc))

    def _add_member(self, kind: ConfChangeType) -> None:
        if len(self.conf.members()) >= 6:
            return
        nid = self._next_id
        if self._propose_conf(ConfChange(kind, nid, f"n{nid}".encode())):
            self._next_id += 1
            self._start(self._add_node(nid))

    # -- faults -----------------------------------------------------------------------------------------

    def _crash(self, node: SimNode) -> None:
        node.crash()
        self.checker.crashed(node)

    def apply_fault(self, f: Fault) -> None:
        members = self.members()
        slot = members[f.args[0] % len(members)] if f.args else 0
        leader = self.leader()
        kind = f.kind
        if kind == "partition":
            self.network.partition(frozenset(m for i, m in enumerate(members) if f.args[0] >> i & 1))
        elif kind == "isolate":
            self.network.partition(frozenset({slot}))
        elif kind == "isolate_leader" and leader is not None:
            self.network.partition(frozenset({leader.id}))
        elif kind == "one_way":
            self.network.block_one_way(slot, members[f.args[1] % len(members)])
        elif kind == "heal":
            self.network.heal()
        elif kind == "crash" and self.nodes[slot].alive:
            self._crash(self.nodes[slot])
        elif kind == "crash_leader" and leader is not None:
            self._crash(leader)
        elif kind == "restart":
            down = self._down()
            if down:
                self._start(down[f.args[0] % len(down)])
        elif kind == "restart_all":
            for n in self._down():
                self._start(n)
        elif kind == "transfer" and leader is not None:
            voters = sorted(self.conf.voters)
            target = voters[f.args[0] % len(voters)]
            if target != leader.id:
                leader.call(lambda raw: raw.transfer_leader(target))
        elif kind == "snapshot" and self.nodes[slot].alive:
            self.nodes[slot].disk.take_snapshot()
        elif kind in ("add_learner", "add_voter"):
            self._add_member(ConfChangeType.ADD_LEARNER if kind == "add_learner" else ConfChangeType.ADD_VOTER)
        elif kind == "promote" and self.conf.learners:
            learners = sorted(self.conf.learners)
            self._propose_conf(ConfChange(ConfChangeType.ADD_VOTER, learners[f.args[0] % len(learners)]))
        elif kind == "remove" and len(self.conf.voters) > 3:
            voters = sorted(self.conf.voters)
            self._propose_conf(ConfChange(ConfChangeType.REMOVE_NODE, voters[f.args[0] % len(voters)]))

    def _down(self) -> list[SimNode]:
        return [n for _, n in sorted(self.nodes.items()) if not n.alive and not n.removed]

    def heal_all(self) -> None:
        """End of the fault phase: reconnect everything and bring every member back."""
        self._hunting = False
        self.network.heal()
        link = self.schedule.link
        self.network.faults = LinkFaults(min_latency=link.min_latency, max_latency=link.max_latency)
        for n in self._down():
            self._start(n)

    def propose_on_leader(self, data: bytes) -> bool:
        return self._on_leader(lambda raw: raw.propose(data))

    def _on_leader(self, request: Callable[[RawNode], None]) -> bool:
        """Run a local request on the current leader; False if there is none or it refused."""
        leader = self.leader()
        if leader is None:
            return False
        try:
            leader.call(request)
        except ProposalDropped:
            return False
        return True

