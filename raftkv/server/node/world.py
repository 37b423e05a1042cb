"""Everything the node takes from the world outside it, as narrow protocols.

The node never reads a clock, opens a socket, touches a file, draws randomness or ends the process by
itself: it is handed a ``Clock``, a ``Transport``, a ``Store``, ``Notes`` beside the store, a
``random.Random`` and a ``Fatal`` hook. Production wires the asyncio clock, the gRPC peer transport, the
LMDB store, files in the data dir and ``os._exit`` or a restart into quarantine (``raftkv/main.py``); the
simulator (``raftkv.sim``) wires virtual time, a simulated network, an in-memory disk that loses unsynced
writes on a crash, notes kept with that disk, a seeded generator and a hook that fails the run. Because the
same node code runs under both, whatever the simulator finds is a finding about the production node.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import BinaryIO, NoReturn, Protocol, TypeVar

from raftkv.core.storage import Storage
from raftkv.core.types import ConfState, Entry, HardState, Message, SnapshotMeta
from raftkv.proto import rpc_pb2
from raftkv.statemachine.applier import AppliedEntry, Committed
from raftkv.statemachine.auth_store import AuthState
from raftkv.statemachine.leases import Lease
from raftkv.statemachine.mvcc import HistoryPage

log = logging.getLogger("raftkv.node")


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic time in seconds and timers on it. Only differences between readings mean anything."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> Awaitable[None]: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer: ...


class LoopClock:
    """The running asyncio loop's clock: ``time.monotonic`` on a normal loop, virtual time on the
    simulator's loop (which is why the node asks the loop rather than ``time``)."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def sleep(self, seconds: float) -> Awaitable[None]:
        return asyncio.sleep(seconds)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)


class Transport(Protocol):
    """Raft messages to peers. ``send`` never blocks and may lose messages (Raft retransmits); the
    transport reports back through the node's ``on_peer_messages`` / ``on_unreachable`` /
    ``on_peer_gone`` (the peer's process ended: its port refused a reconnect, which a partition or a
    paused process never causes) / ``on_snapshot_status``, asks the node's ``is_removed`` before it hears
    a sender it does not know (a removed member is never heard again), and streams snapshots between the
    nodes' ``StagedSnapshots``."""

    def send(self, messages: list[Message]) -> None: ...

    def set_peer(self, node_id: int, address: str, name: str = "") -> None:
        """``name``: the common name the peer certificate of ``node_id`` must carry ("" while unknown)."""

    def remove_peer(self, node_id: int) -> None:
        """Stop sending to ``node_id`` (whether it may still be heard is ``is_removed``'s to say)."""


class LeaseForwarder(Protocol):
    """Asks the leader to renew a lease or to report it (remaining TTL, granted TTL, attached keys)."""

    async def keep_alive(self, leader_id: int, lease_id: int, timeout: float) -> int: ...

    async def time_to_live(
        self, leader_id: int, lease_id: int, keys: bool, timeout: float
    ) -> rpc_pb2.LeaseTimeToLiveResponse: ...


class WriterStats(Protocol):
    """The store's single writer, as the Raft loop watches it."""

    commits: int
    busy_seconds: float

    @property
    def fsyncs(self) -> int:
        """Synchronous disk writes so far (one per commit, one more per flushed commit)."""
        ...

    def busy_for(self) -> float:
        """Seconds the write now running has taken so far (0 when idle)."""
        ...


class SnapshotInstall(Protocol):
    """Received snapshot data, staged until the core accepts its SNAP message."""

    meta: SnapshotMeta

    def write(self, chunk: bytes) -> None: ...

    def streamed_meta(self) -> SnapshotMeta:
        """The position the whole staged data is at (from then on ``meta``)."""
        ...

    def abort(self) -> None: ...


InstallT = TypeVar("InstallT", bound=SnapshotInstall)


class Store(Protocol[InstallT]):
    """The log and the state machine of one member, with the persistence contract of ``raftkv/core/README.md``.

    Writes are jobs that run one after another in submission order; each returned future resolves once the
    job is committed, and a ``durable`` one once it also survives a power loss (fsynced). ``save`` persists
    a Ready (snapshot, entries, hard state) and, in the same transaction, applies ``committed_entries``
    (the loop passes them ``Committed``, decoded once, which the apply then reuses); ``apply`` applies alone,
    recording the applied index with the state it describes, not durably (a power loss may undo it; the
    log, durable before it, replays it). Reads see what was committed, never a half-done job. ``InstallT``
    is the store's own kind of staged snapshot: ``save`` installs only what ``begin_snapshot_install`` made.
    """

    @property
    def log(self) -> Storage: ...

    @property
    def writer(self) -> WriterStats: ...

    def save(
        self,
        snapshot_install: InstallT | None,
        entries: Sequence[Entry],
        hard_state: HardState | None,
        committed_entries: Committed | Sequence[Entry] = (),
        *,
        durable: bool = True,
    ) -> concurrent.futures.Future[list[AppliedEntry]]: ...

    def apply(
        self, committed_entries: Committed | Sequence[Entry]
    ) -> concurrent.futures.Future[list[AppliedEntry]]: ...

    def create_snapshot(self) -> concurrent.futures.Future[SnapshotMeta]: ...

    def defragment(self) -> concurrent.futures.Future[None]: ...

    def begin_snapshot_install(self, meta: SnapshotMeta) -> InstallT: ...

    def open_snapshot(self, meta: SnapshotMeta) -> Iterator[bytes]: ...

    def write_etcd_snapshot(self, out: BinaryIO) -> int: ...

    def applied_index(self) -> int: ...

    def conf_state(self) -> ConfState: ...

    def revision(self) -> int: ...

    def compact_revision(self) -> int: ...

    def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse: ...

    def read_only_txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse: ...

    def history_page(
        self, start_rev: int, key: bytes, range_end: bytes, *, prev_kv: bool, max_bytes: int
    ) -> HistoryPage: ...

    def hash_kv(self, revision: int = 0) -> tuple[int, int, int]: ...

    def lease(self, lease_id: int) -> tuple[Lease, list[bytes]] | None: ...

    def leases(self) -> list[Lease]: ...

    def members(self) -> list[rpc_pb2.Member]: ...

    def removed_members(self) -> frozenset[int]: ...

    def alarms(self) -> list[rpc_pb2.AlarmMember]: ...

    def auth_state(self) -> AuthState: ...

    def db_size(self) -> int: ...

    def db_size_in_use(self) -> int: ...

    def quota_usage(self) -> int: ...


class Notes(Protocol):
    """What a member keeps beside its store, outside it, because it must outlive damage to the store
    (``raftkv.server.integrity``): whom to hand a CORRUPT alarm, and the marker that keeps a member whose
    data failed it in quarantine from its next start on."""

    def remember_members(self, members: list[rpc_pb2.Member]) -> None: ...

    def mark_quarantined(self, reason: str) -> None: ...


#: Called when the node can no longer vouch for its state (a failed write, a broken Raft loop): it must stop
#: at once rather than answer anyone. Never returns.
Fatal = Callable[[str], NoReturn]


def exit_process(reason: str) -> NoReturn:
    """Production's ``Fatal``: log and end the process without cleanup (no further write may happen)."""
    log.critical("%s; stopping this member to protect the data", reason)
    os._exit(70)


def fresh_rng() -> random.Random:
    """Production's randomness: a generator seeded from the OS, so restarted members draw new ids."""
    return random.Random(int.from_bytes(os.urandom(8), "big"))
