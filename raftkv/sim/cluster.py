"""A simulated cluster: production members, the network, clients and checkers on one loop, plus faults.

The cluster is the composition root of a run, as ``raftkv/main.py`` is of a process: it builds each
member from its configuration, wires the checkers to the members' transports, disks and applied
revisions, and plays the schedule's faults the way an operator and a hostile environment would —
partitions, crashes that lose unsynced writes, restarts, leader transfers and membership changes (``member
add`` through a running member, then start the new one with ``--initial-cluster-state existing``).

With ``Schedule.announce`` a crash is a killed process rather than a lost machine: its kernel resets the
connections to every peer that can reach it (after what the process sent before dying: TCP delivers that
first), and each peer's transport probes the port, finds it refused and reports the peer gone, as the
gRPC transport does. ``reset`` resets a connection to a live member (its probe is answered: nothing is
reported), and ``false_gone`` / ``false_gone_leader`` make the probe misjudge a live member as gone.
Partitions are never announced.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from raftkv import errors
from raftkv.core.types import ConfState, Message
from raftkv.server.watch_hub import WatchHub
from raftkv.sim.disk import WRITEBACK_INTERVAL
from raftkv.sim.history import History
from raftkv.sim.invariants import InvariantViolation, RaftChecker
from raftkv.sim.leadership import Failover, LeadershipAudit
from raftkv.sim.loop import SimLoop
from raftkv.sim.member import SimMember, member_config, peer_url
from raftkv.sim.network import LinkFaults, Network
from raftkv.sim.schedule import Fault, Schedule
from raftkv.sim.workload import Workload
from raftkv.storage.raft_log import read_u64

UNIT = 0.01  # seconds per schedule time unit: a heartbeat (a Raft tick) is 10 units
#: How long a leader must have held a quorum, undisturbed, for losing office to count as an extra change:
#: three election timeouts (check-quorum needs up to two to notice a lost quorum).
AUDIT_WINDOW = 300
ADMIN_TIMEOUT = 5.0

#: Bugs that can be planted in the production node for a run (``--unsafe-planted-bug`` names), and those
#: planted beneath it, in the simulated disk.
NODE_BUGS = (
    "lease-query-before-apply", "apply-before-persist", "stale-reads", "expiry-by-successor", "ack-unflushed-append",
    "read-lease-too-long",
)
DISK_BUGS = ("skip-fsync",)


@dataclass(frozen=True, slots=True)
class SimOptions:
    core_bugs: frozenset[str] = frozenset()  # raftkv.core Config.unsafe_bugs
    planted_bug: str | None = None  # one of NODE_BUGS or DISK_BUGS
    keep_trace: int = 0  # remember the last N trace lines, for failure reports
    lease_reads: bool = False  # members serve linearizable reads under the leader lease


class Cluster:
    def __init__(self, schedule: Schedule, options: SimOptions) -> None:
        self.schedule = schedule
        self.options = options
        self.loop = SimLoop()
        self._rng = random.Random(schedule.seed)
        self.members: dict[int, SimMember] = {}
        self._by_name: dict[str, SimMember] = {}
        self.network = Network(self.loop, self._derive_rng(), schedule.link, UNIT, self.members.get)
        self.raft = RaftChecker(self.members)
        self.history = History(self.loop.time, self.violation)
        self.audit = LeadershipAudit(
            AUDIT_WINDOW,
            self.violation if schedule.stable_leader else None,
            lambda: self.loop.time() / UNIT,
            lambda src, dst: not self.network.blocked(src, dst),
            self._ask_new_leader,
        )
        self.workload = Workload(
            self._derive_rng(), self.history, self.current_members, self.note, schedule.clients, schedule.keys, 0.15
        )
        self._nemesis_rng = self._derive_rng()
        self._hunting = schedule.hunt > 0
        self._tasks: set[asyncio.Task[object]] = set()
        self._lease_tables: dict[int, tuple[object, set[int]]] = {}
        self._conf = ConfState()
        self._next_name = schedule.nodes + 1
        self.recent: list[str] = []

    def _derive_rng(self) -> random.Random:
        return random.Random(self._rng.getrandbits(64))

    # --- the trace, and failing -------------------------------------------------------------------------
    def note(self, line: str) -> None:
        self.loop.note(line)
        if self.options.keep_trace:
            self.recent.append(f"{self.loop.time():9.3f} {line}")
            if len(self.recent) > 2 * self.options.keep_trace:
                del self.recent[: -self.options.keep_trace]

    def violation(self, message: str) -> None:
        self.note(f"VIOLATION {message}")
        self.loop.fail(f"InvariantViolation: {message}")
        raise InvariantViolation(message)

    def spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task: asyncio.Task[object] = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- members --------------------------------------------------------------------------------------------
    def _new_member(self, name: str, initial_cluster: tuple[tuple[str, str], ...], state: str) -> SimMember:
        planted = self.options.planted_bug if self.options.planted_bug in NODE_BUGS else None
        lease_reads = self.options.lease_reads or planted == "read-lease-too-long"
        cfg = member_config(name, initial_cluster, state, self.schedule.knobs, planted, lease_reads)
        member = SimMember(
            self.loop, self.network, cfg, self.schedule.knobs, self._derive_rng(), UNIT,
            self._sending, self._disk_committed, self.options.core_bugs,
        )
        if self.options.planted_bug == "skip-fsync":
            member.disk.skip_fsync()
        self.members[member.id] = member
        self._by_name[name] = member
        return member

    def _start(self, member: SimMember) -> None:
        member.start()
        node = member.node
        assert node is not None
        member.watch_hub = WatchHub(node)
        self.history.restarted(member.name, node.current_revision())
        # Likewise its lease table is what its disk holds: a grant whose apply the crash undid is applied
        # again, not revoked.
        items = member.disk.env.live["leases"]
        self._lease_tables[member.id] = (items, {read_u64(key) for key, _ in items})
        node.subscribe_applied(functools.partial(self.history.applied, member.name))
        self.raft.started(member)
        self.audit.started(member)
        self.note(f"start {member.name} (life {member.lives})")

    def _crash(self, member: SimMember) -> None:
        if member.node is None:
            return
        member.crash()
        member.watch_hub = None
        self.raft.crashed(member)
        self.audit.crashed(member)
        self.note(f"crash {member.name}")
        if self.schedule.announce:
            self._announce(member.id)

    def _announce(self, dead: int) -> None:
        """A killed process's kernel resets its connections; the reset leaves after what it sent before."""
        net = self.network
        for peer in self.current_members():
            transport = peer.transport
            if transport is not None and peer.id != dead and transport.knows(dead):
                reset = functools.partial(transport.connection_reset, dead)
                net.after(net.faults.max_latency, functools.partial(self._reset, dead, peer.id, reset))

    def _reset(self, src: int, dst: int, reset: Callable[[], None]) -> None:
        self.network.transmit(src, dst, reset)

    def current_members(self) -> list[SimMember]:
        """Members of the newest configuration anyone applied (plus founders before any is known)."""
        ids = self._conf.members()
        return [m for _, m in sorted(self.members.items()) if not m.removed and (not ids or m.id in ids)]

    def _refresh_conf(self) -> None:
        best: tuple[int, ConfState] | None = None
        for member in self.members.values():
            if member.node is not None:
                applied = member.node.loop.applied
                if best is None or applied > best[0]:
                    best = (applied, member.node.loop.raw.status().conf_state)
        if best is not None:
            self._conf = best[1]

    def leader(self) -> SimMember | None:
        lid = self.raft.current_leader()
        return self.members.get(lid) if lid else None

    def slot(self, index: int) -> SimMember:
        members = self.current_members()
        return members[index % len(members)]

    # --- hooks from the members --------------------------------------------------------------------------------
    def _sending(self, member: SimMember, msg: Message) -> None:
        self.loop.note(f"send {msg.type.name} {member.name}->{msg.to:x} t{msg.term} i{msg.index}")
        before = self.raft.elections
        try:
            self.raft.sending(member, msg)
        except InvariantViolation as exc:
            self.violation(str(exc))  # the verdict, before it surfaces as the member's failed loop
        self.audit.observe(member)
        if self.raft.elections > before and self._hunting:
            self._maybe_hunt(member)

    def _disk_committed(self, member: SimMember) -> None:
        try:
            self.raft.disk_committed(member)
        except InvariantViolation as exc:
            self.violation(str(exc))  # the verdict, before it surfaces as the member's failed write
        self.audit.observe(member)
        items = member.disk.env.live["leases"]
        previous = self._lease_tables.get(member.id)
        if previous is None or previous[0] is not items:
            leases = {read_u64(key) for key, _ in items}
            self.history.member_lease_table(member.name, previous[1] if previous else set(), leases)
            self._lease_tables[member.id] = (items, leases)

    # --- the run -------------------------------------------------------------------------------------------------
    def boot(self) -> None:
        names = [f"n{i}" for i in range(1, self.schedule.nodes + 1)]
        initial = tuple((name, peer_url(name)) for name in names)
        for name in names:
            self._new_member(name, initial, "new")
        for member in list(self.members.values()):
            self._start(member)
        self._refresh_conf()
        for f in self.schedule.faults:
            self.network.after(f.at, functools.partial(self.apply_fault, f))
        self.network.after(int(WRITEBACK_INTERVAL / UNIT), self._write_back)
        self.workload.start(self.spawn)

    def _write_back(self) -> None:
        for member in self.members.values():
            member.disk.write_back()
        self.network.after(int(WRITEBACK_INTERVAL / UNIT), self._write_back)

    # --- faults --------------------------------------------------------------------------------------------------
    def apply_fault(self, f: Fault) -> None:
        self._refresh_conf()
        self.note(f"fault {f.kind}{list(f.args)}")
        members = [m.id for m in self.current_members()]
        if not members:
            return
        slot = self.slot(f.args[0]) if f.args else None
        leader = self.leader()
        kind = f.kind
        if kind in ("partition", "isolate", "isolate_leader", "one_way", "heal", "transfer"):
            self.audit.disturbed()
        if kind == "partition":
            self.network.partition(frozenset(m for i, m in enumerate(members) if f.args[0] >> i & 1))
        elif kind == "isolate" and slot is not None:
            self.network.partition(frozenset({slot.id}))
        elif kind == "isolate_leader" and leader is not None:
            self.audit.leader_struck("isolated", leader)
            self.network.partition(frozenset({leader.id}))
        elif kind == "one_way" and slot is not None:
            self.network.block_one_way(slot.id, self.slot(f.args[1]).id)
        elif kind == "heal":
            self.network.heal()
        elif kind == "crash" and slot is not None:
            self._crash(slot)
        elif kind == "crash_leader" and leader is not None:
            self.audit.leader_struck("crash announced" if self.schedule.announce else "crash silent", leader)
            self._crash(leader)
        elif kind in ("reset", "false_gone") and slot is not None and slot.transport is not None:
            peer = self.slot(f.args[1])
            if kind == "false_gone" and peer.node is not None:
                self.audit.false_report(slot, peer)
            slot.transport.connection_reset(peer.id, misjudged=kind == "false_gone")
        elif kind == "false_gone_leader" and leader is not None:
            followers = [m for m in self.current_members() if m.transport is not None and m.id != leader.id]
            if followers:
                observer = followers[f.args[0] % len(followers)]
                assert observer.transport is not None
                self.audit.false_report(observer, leader)
                observer.transport.connection_reset(leader.id, misjudged=True)
        elif kind == "restart":
            down = self._down()
            if down:
                self._start(down[f.args[0] % len(down)])
        elif kind == "restart_all":
            for member in self._down():
                self._start(member)
        elif kind == "transfer" and leader is not None and leader.node is not None:
            voters = sorted(self._conf.voters)
            target = voters[f.args[0] % len(voters)] if voters else 0
            if target and target != leader.id:
                self.spawn(self._admin(f"transfer to {target:x}", leader.node.move_leader(target, ADMIN_TIMEOUT)))
        elif kind in ("add_learner", "add_voter"):
            self.spawn(self._add_member(kind == "add_learner"))
        elif kind == "promote" and self._conf.learners:
            learners = sorted(self._conf.learners)
            learner = learners[f.args[0] % len(learners)]
            self.spawn(self._change(lambda node: node.member_promote(learner, ADMIN_TIMEOUT), "promote"))
        elif kind == "remove" and len(self._conf.voters) > 3:
            voters = sorted(self._conf.voters)
            self.spawn(self._remove(voters[f.args[0] % len(voters)]))

    def _ask_new_leader(self, member: SimMember, failover: Failover) -> None:
        """Ask a leader elected after a leader fault, the moment it is elected, what clients will ask it: a
        linearizable read barrier, then a lease's time to live (answered once it is caught up)."""
        node = member.node
        assert node is not None

        async def ask() -> None:
            try:
                await node.read_barrier(ADMIN_TIMEOUT)
                self.audit.reached(failover, "read")
                leases = node.lease_ids()
                lease = leases[-1] if leases else 0
                started = self.loop.time()
                answer = await node.lease_time_to_live(lease, False, ADMIN_TIMEOUT)
                if lease:
                    self.history.check_lease_answer("time-to-live", member.name, lease, answer.TTL >= 0, started)
                self.audit.reached(failover, "lease")
            except errors.EtcdException as exc:
                self.note(f"new leader {member.name} asked: {exc.error.message}")

        member.spawn(ask())

    def _down(self) -> list[SimMember]:
        return [m for m in self.current_members() if m.node is None]

    async def _admin(self, what: str, call: Awaitable[object]) -> bool:
        self.audit.disturbed()
        try:
            await call
        except errors.EtcdException as exc:
            self.note(f"admin {what}: {exc.error.message}")
            return False
        finally:
            self.audit.disturbed()  # a membership change moves leadership when it applies, not when asked
        self.note(f"admin {what}: ok")
        return True

    def _any_running(self) -> SimMember | None:
        running = [m for m in self.current_members() if m.node is not None]
        return self._nemesis_rng.choice(running) if running else None

    async def _change(self, call, what: str) -> None:
        member = self._any_running()
        if member is not None and member.node is not None:
            await self._admin(what, call(member.node))

    async def _add_member(self, learner: bool) -> None:
        if len(self.current_members()) >= 6:
            return
        via = self._any_running()
        if via is None or via.node is None:
            return
        name = f"n{self._next_name}"
        self._next_name += 1
        if not await self._admin(f"add {name}", via.node.member_add([peer_url(name)], learner, ADMIN_TIMEOUT)):
            return
        initial = tuple((m.name, peer_url(m.name)) for m in self.current_members()) + ((name, peer_url(name)),)
        self._start(self._new_member(name, initial, "existing"))

    async def _remove(self, member_id: int) -> None:
        via = self._any_running()
        if via is None or via.node is None:
            return
        if await self._admin(f"remove {member_id:x}", via.node.member_remove(member_id, ADMIN_TIMEOUT)):
            removed = self.members.get(member_id)
            if removed is not None:
                self._crash(removed)
                removed.removed = True

    def _maybe_hunt(self, member: SimMember) -> None:
        """A nemesis strikes some leaders soon after their election (the ``figure8`` profile)."""
        rng = self._nemesis_rng
        if rng.randrange(100) >= self.schedule.hunt:
            return
        life = member.life
        self.network.after(rng.randint(0, self.schedule.hunt_delay), lambda: self._hunt(member, life))

    def _hunt(self, member: SimMember, life: object) -> None:
        if not self._hunting or member.life is not life or self.raft.current_leader() != member.id:
            return
        rng = self._nemesis_rng
        self.audit.disturbed()
        if rng.random() < 0.25:
            self.audit.leader_struck("crash announced" if self.schedule.announce else "crash silent", member)
            self._crash(member)
            self.network.after(rng.randint(50, 400), lambda: self._revive(member))
            return
        side = {member.id}
        others = [m.id for m in self.current_members() if m.node is not None and m.id != member.id]
        if others and rng.random() < 0.5:
            side.add(rng.choice(others))
        self.network.partition(frozenset(side))

    def _revive(self, member: SimMember) -> None:
        if member.node is None and not member.removed:
            self._start(member)

    def heal_all(self) -> None:
        """End of the fault phase: reconnect everything and bring every member back."""
        self._hunting = False
        self.audit.disturbed()
        self.network.heal()
        link = self.schedule.link
        self.network.faults = LinkFaults(min_latency=link.min_latency, max_latency=link.max_latency)
        for member in self._down():
            self._start(member)
        self.note("heal")
