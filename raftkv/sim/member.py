"""One simulated member: a disk that survives crashes, and the production ``Node`` running on it.

Starting a member is what ``raftkv`` does at start-up — open the store on the data dir (checking its
identity, or bootstrapping / joining the cluster: ``raftkv.server.data_dir.prepare_store``), build the ``Node``
and start it — except that the disk is a ``SimDisk``, the transport a ``SimTransport`` and the clock the
simulator's loop. Each start is a new ``Life``; a crash ends it (nothing of it runs again) and loses
whatever the disk had not made durable.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import random
import sys
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn

from raftkv.core.config import Config as RaftConfig
from raftkv.core.types import Message
from raftkv.proto import rpc_pb2
from raftkv.server.config import ServerConfig
from raftkv.server.data_dir import apply_config, prepare_store
from raftkv.server.node import Node
from raftkv.server.watch_hub import WatchHub
from raftkv.sim.disk import SimDisk
from raftkv.sim.loop import CURRENT_LIFE, Life, SimLoop
from raftkv.sim.network import Network, SimLeaseForwarder, SimTransport


class MemberHalted(BaseException):
    """Raised by the simulated fatal hook: the member stops as ``os._exit`` would stop the process."""


class SimNotes:
    """The simulator's ``raftkv.server.node.world.Notes``: production keeps them as files in the data
    dir, fsynced; here they are kept in memory for the member's whole run, crashes included."""

    def __init__(self) -> None:
        self.members: list[rpc_pb2.Member] = []
        self.quarantined: str | None = None

    def remember_members(self, members: list[rpc_pb2.Member]) -> None:
        self.members = list(members)

    def mark_quarantined(self, reason: str) -> None:
        self.quarantined = reason


@dataclasses.dataclass(frozen=True, slots=True)
class MemberKnobs:
    """Per-run parameters of every member, drawn from the seed (the "buggify" dimension of a schedule)."""

    max_entries_per_msg: int = 4096
    max_inflight_msgs: int = 256
    pre_vote: bool = True
    check_quorum: bool = True
    fsync_latency: int = 2  # time units, the upper bound of each write's draw
    snapshot_count: int = 1_000_000  # applied entries between snapshots
    snapshot_catchup_entries: int = 5


class SimMember:
    def __init__(
        self,
        loop: SimLoop,
        network: Network,
        cfg: ServerConfig,
        knobs: MemberKnobs,
        rng: random.Random,
        unit: float,
        sending: Callable[[SimMember, Message], None],
        on_disk_commit: Callable[[SimMember], None],
        core_bugs: frozenset[str],
    ) -> None:
        self._loop = loop
        self._network = network
        self.cfg = cfg
        self.id = cfg.member_id
        self.name = cfg.name
        self._knobs = knobs
        self._rng = rng
        self._sending = sending
        self._core_bugs = core_bugs
        self.disk = SimDisk(rng, knobs.fsync_latency * unit, lambda _disk: on_disk_commit(self))
        self.node: Node | None = None
        self.transport: SimTransport | None = None
        self.life: Life | None = None
        self._context: contextvars.Context | None = None
        self.lives = 0
        self.all_lives: list[Life] = []
        self.removed = False
        self.watch_hub: WatchHub | None = None
        #: What the member keeps beside its store; like the disk, it survives crashes.
        self.notes = SimNotes()

    @property
    def alive(self) -> bool:
        return self.node is not None

    def start(self) -> None:
        """(Re)start the process: open the store as ``raftkv`` does and run a fresh ``Node`` on it."""
        assert self.node is None and not self.removed
        self.lives += 1
        self.life = Life(self.id, self.lives)
        self.all_lives.append(self.life)
        self._context = contextvars.copy_context()
        self._context.run(CURRENT_LIFE.set, self.life)
        k = self._knobs
        store = self.disk.open_store(apply_config(self.cfg), k.snapshot_catchup_entries)
        member_id = prepare_store(self.cfg, store)
        assert member_id == self.id, "the simulator never moves a member to another peer URL"

        def tune(c: RaftConfig) -> RaftConfig:
            return dataclasses.replace(
                c,
                max_entries_per_msg=k.max_entries_per_msg,
                max_inflight_msgs=k.max_inflight_msgs,
                pre_vote=k.pre_vote,
                check_quorum=k.check_quorum,
                unsafe_bugs=self._core_bugs,
            )

        node = self._context.run(
            lambda: Node(self.cfg, store, self.id, rng=random.Random(self._rng.getrandbits(64)), fatal=self._fatal,
                         notes=self.notes, raft_tuning=tune)
        )
        self.node = node
        self.transport = SimTransport(self._network, self, self._sending, node.is_removed)
        node.attach_transport(self.transport)
        node.leases.forwarder = SimLeaseForwarder(self._network, self)
        self.spawn(node.start()).add_done_callback(self._started)

    def _started(self, task: asyncio.Task[None]) -> None:
        """``raftkv`` exits if its node cannot start; here that ends the run, with the reason."""
        if not task.cancelled() and (exc := task.exception()) is not None and not isinstance(exc, MemberHalted):
            self._loop.fail(f"{self.name} failed to start: {''.join(traceback.format_exception(exc))}".rstrip())

    def crash(self) -> None:
        """Power loss: the process stops dead and the disk keeps only what was durable."""
        if self.life is not None:
            self.life.end()
        self.node = None
        self.transport = None
        self.life = None
        self._context = None
        self.disk.crash()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as part of the current life (it dies with it)."""
        assert self._context is not None, f"{self.name} is not running"
        return self._loop.create_task(coro, context=self._context.copy())

    def _fatal(self, reason: str) -> NoReturn:
        exc = sys.exc_info()[1]
        detail = "".join(traceback.format_exception(exc)) if exc is not None else ""
        self._loop.fail(f"{self.name} stopped on a fatal error: {reason}\n{detail}".rstrip())
        raise MemberHalted(reason)


def member_config(
    name: str,
    initial_cluster: tuple[tuple[str, str], ...],
    state: str,
    knobs: MemberKnobs,
    planted_bug: str | None,
    lease_reads: bool = False,
) -> ServerConfig:
    """The configuration a member of the simulated cluster starts with (plaintext, in-memory data dir)."""
    url = peer_url(name)
    return ServerConfig(
        name=name,
        data_dir=Path(f"/sim/{name}"),
        listen_peer_urls=(url,),
        advertise_peer_urls=(url,),
        listen_client_urls=(f"http://{name}.sim:2379",),
        advertise_client_urls=(f"http://{name}.sim:2379",),
        initial_cluster=initial_cluster,
        initial_cluster_state=state,
        cluster_token="sim",
        client_tls=None,
        peer_tls=None,
        snapshot_count=knobs.snapshot_count,
        snapshot_catchup_entries=knobs.snapshot_catchup_entries,
        planted_bug=planted_bug,
        leader_lease_reads=lease_reads,
    )


def peer_url(name: str) -> str:
    return f"http://{name}.sim:2380"
