"""One simulated node: a ``RawNode``, its simulated disk, and a driver loop that follows the Ready contract.

The driver takes one ``Ready`` at a time. Its writes are "in flight" until a simulated fsync completes
(an event some time later); only then are they made durable, the messages sent, committed entries applied,
read states served and ``advance`` called. Messages keep arriving and ticks keep firing meanwhile (the core
allows ``step`` between ``ready`` and ``advance``). A crash bumps ``life`` so the pending fsync event finds
itself stale and does nothing: its writes are lost with the process.

Two simulator-side bugs can be planted (``sim_bugs``) to prove the checker can see driver mistakes too:
``"send_before_fsync"`` sends a Ready's messages before its writes are durable, and ``"stale_read"``
answers reads from local state without the ReadIndex protocol.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from raftkv.core.rawnode import Config, RawNode
from raftkv.core.types import ConfChange, Entry, EntryType, Message, MessageType, ReadState, Ready, SnapshotMeta
from raftkv.sim.clock import EventQueue
from raftkv.sim.disk import DurableState
from raftkv.sim.network import Envelope


class NodeHooks(Protocol):
    """What a node tells the rest of the simulation (the cluster implements it)."""

    def send(self, env: Envelope) -> None: ...
    def persisted(self, node: SimNode, entries: list[Entry]) -> None: ...
    def applied(self, node: SimNode, entry: Entry) -> None: ...
    def snapshot_installed(self, node: SimNode, meta: SnapshotMeta) -> None: ...
    def read_served(self, node: SimNode, ctx: bytes) -> None: ...
    def observe(self, node: SimNode) -> None: ...
    def synced(self, node: SimNode) -> None: ...


@dataclass(frozen=True, slots=True)
class NodeKnobs:
    """Per-run driver parameters, drawn from the seed (the "buggify" dimension of a schedule)."""

    election_tick: int = 10
    max_entries_per_msg: int = 4096
    max_inflight_msgs: int = 256
    fsync_latency: int = 2
    snapshot_every: int = 1_000_000
    pre_vote: bool = True
    check_quorum: bool = True


class SimNode:
    def __init__(
        self,
        node_id: int,
        queue: EventQueue,
        rng: random.Random,
        hooks: NodeHooks,
        knobs: NodeKnobs,
        core_bugs: frozenset[str],
        sim_bugs: frozenset[str],
    ) -> None:
        self.id = node_id
        self.disk = DurableState()
        self.raw: RawNode | None = None
        #: Incremented by every crash; events scheduled by an earlier life are ignored.
        self.life = 0
        self.removed = False
        self._queue = queue
        self._rng = rng
        self._hooks = hooks
        self._knobs = knobs
        self._core_bugs = core_bugs
        self._sim_bugs = sim_bugs
        self._in_flight = False
        self._staged: dict[int, bytes] = {}
        self._waiting_reads: list[ReadState] = []

    # -- lifecycle ----------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.raw is not None

    def start(self) -> None:
        """(Re)build the core from durable state only, resuming from the durable applied index."""
        assert self.raw is None and not self.removed
        k = self._knobs
        cfg = Config(
            id=self.id,
            election_tick=k.election_tick,
            heartbeat_tick=1,
            applied=self.disk.sm.applied,
            max_entries_per_msg=k.max_entries_per_msg,
            max_inflight_msgs=k.max_inflight_msgs,
            pre_vote=k.pre_vote,
            check_quorum=k.check_quorum,
            unsafe_bugs=self._core_bugs,
        )
        self.raw = RawNode(cfg, self.disk.storage, self._rng)
        self._pump()

    def crash(self) -> None:
        """Lose every volatile thing: the core, the in-flight (unsynced) Ready, staged snapshots, reads."""
        self.raw = None
        self.life += 1
        self._in_flight = False
        self._staged.clear()
        self._waiting_reads.clear()

    # -- inputs -------------------------------------------------------------------------------------

    def tick(self) -> None:
        if self.raw is not None:
            self.raw.tick()
            self._pump()

    def deliver(self, env: Envelope) -> None:
        if self.raw is None:
            return
        if env.msg.type == MessageType.SNAP:
            assert env.snapshot_data is not None and env.msg.snapshot is not None
            self._staged[env.msg.snapshot.index] = env.snapshot_data
        self.raw.step(env.msg)
        self._pump()

    def call(self, fn: Callable[[RawNode], None]) -> None:
        """Run a local request (propose, read_index, ...) on the live core; ProposalDropped propagates."""
        assert self.raw is not None
        try:
            fn(self.raw)
        finally:
            self._pump()

    def serve_stale_read(self, ctx: bytes) -> None:
        """Planted bug ``stale_read``: answer from local state at once, skipping ReadIndex."""
        self._hooks.read_served(self, ctx)

    # -- the driver loop ----------------------------------------------------------------------------

    def _pump(self) -> None:
        raw = self.raw
        if raw is not None and not self._in_flight and raw.has_ready():
            rd = raw.ready()
            self._in_flight = True
            early = "send_before_fsync" in self._sim_bugs
            if early:
                self._send(rd.messages)
            synced = rd.must_sync or rd.entries or rd.hard_state is not None or rd.snapshot is not None
            delay = self._rng.randint(0, self._knobs.fsync_latency) if synced else 0
            life = self.life
            self._queue.schedule(delay, f"fsync n{self.id}", lambda: self._synced(rd, life, not early))
        self._hooks.observe(self)

    def _synced(self, rd: Ready, life: int, send: bool) -> None:
        if life != self.life:
            return  # the node crashed before this fsync completed: the writes never hit the disk
        raw = self.raw
        assert raw is not None
        self.disk.sync(rd, self._staged)
        self._hooks.synced(self)
        if rd.snapshot is not None:
            self._hooks.snapshot_installed(self, rd.snapshot)
        if rd.entries:
            self._hooks.persisted(self, rd.entries)
        if send:
            self._send(rd.messages)
        self._apply(raw, rd.committed_entries)
        self._waiting_reads.extend(rd.read_states)
        self._serve_reads()
        raw.advance(rd)
        self._in_flight = False
        if self.disk.sm.applied - self.disk.storage.snapshot_meta().index >= self._knobs.snapshot_every:
            self.disk.take_snapshot()
        self._pump()

    def _send(self, messages: list[Message]) -> None:
        for msg in messages:
            data = None
            if msg.type == MessageType.SNAP:
                assert msg.snapshot is not None and self.raw is not None
                meta = self.disk.storage.snapshot_meta()
                if msg.snapshot.index != meta.index or msg.to not in meta.conf_state.members():
                    # Either a newer snapshot replaced this one before it could be streamed, or the snapshot
                    # predates the recipient joining (it would refuse it, and wait forever if no later
                    # snapshot came). Take a fresh one if that helps, and fail this send so the core retries.
                    if msg.to in self.disk.sm.conf_state.members() and self.disk.sm.applied > meta.index:
                        self.disk.take_snapshot()
                    self.raw.report_snapshot(msg.to, False)
                    continue
                data = self.disk.snapshot_data
            self._hooks.send(Envelope(msg, data))

    def _apply(self, raw: RawNode, entries: list[Entry]) -> None:
        sm = self.disk.sm
        for e in entries:
            if e.type == EntryType.CONF_CHANGE:
                cs = raw.apply_conf_change(ConfChange.decode(e.data))
                sm.skip(e.index, cs)
                self.disk.storage.set_conf_state(cs)
            else:
                sm.apply_put(e.index, e.data)
            self._hooks.applied(self, e)

    def _serve_reads(self) -> None:
        applied = self.disk.sm.applied
        ready = [rs for rs in self._waiting_reads if rs.index <= applied]
        self._waiting_reads = [rs for rs in self._waiting_reads if rs.index > applied]
        for rs in ready:
            self._hooks.read_served(self, rs.request_ctx)
