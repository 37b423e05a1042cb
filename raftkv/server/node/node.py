"""A raftkv member: the pieces of the node wired together, behind the ``Backend`` the API layer calls.

Each job lives in a module of its own and this class only composes them:

- ``raft_loop``   the Ready loop (persist, send, apply), proposals and the core's inputs;
- ``reads``       linearizable reads (ReadIndex rounds);
- ``leases``      the leader's lease clock, keep-alives, time-to-live, revoking what expired;
- ``membership``  member list and changes, who the transport dials, announcing this member;
- ``maintenance`` status, alarms and quota, leader transfer, defragmentation, hashes, backups;
- ``snapshots``   when to snapshot, and snapshots staged from the leader;
- ``auth``        the auth store's current view and the simple tokens;
- ``world``       what the node is given: clock, transport, store, randomness, the fatal-error hook.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from raftkv import errors
from raftkv.core.config import Config as RaftConfig
from raftkv.core.types import ConfChange, Message
from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.server.backend import ClientSession, RevisionEvents
from raftkv.server.config import ServerConfig
from raftkv.server.hash_check import HashCheck
from raftkv.server.integrity import DataDirNotes, Integrity
from raftkv.server.node.auth import NodeAuth
from raftkv.server.node.leases import NodeLeases
from raftkv.server.node.maintenance import Maintenance
from raftkv.server.node.membership import Membership
from raftkv.server.node.raft_loop import RaftLoop
from raftkv.server.node.snapshots import StagedSnapshots
from raftkv.server.node.world import (
    Clock,
    Fatal,
    LoopClock,
    Notes,
    Store,
    Transport,
    exit_process,
    fresh_rng,
)
from raftkv.server.quota import Quota
from raftkv.statemachine.applier import AppliedEntry
from raftkv.statemachine.auth_store import AuthState
from raftkv.statemachine.mvcc import HistoryPage
from raftkv.statemachine.request_shape import MAX_TXN_OPS
from raftkv.storage.sealed import CorruptionError

log = logging.getLogger("raftkv.node")
APPLIED_CALLBACK = Callable[[RevisionEvents], None]


class Node:
    """A raftkv member. Implements ``raftkv.server.backend.Backend`` for the client-facing services."""

    def __init__(
        self,
        cfg: ServerConfig,
        store: Store[Any],
        member_id: int,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        fatal: Fatal = exit_process,
        notes: Notes | None = None,
        raft_tuning: Callable[[RaftConfig], RaftConfig] | None = None,
        on_removed: Callable[[], None] | None = None,
    ) -> None:
        """``raft_tuning`` adjusts the core's configuration (the simulator varies message sizes, flow
        control and pre-vote, and plants core bugs); production runs the core as configured here.
        ``on_removed``: what to do once this member learned it was removed from the cluster (production
        stops, as etcd does; see ``membership``)."""
        self.cfg = cfg
        self.store = store
        self.member_id = member_id
        self.notes = notes or DataDirNotes(cfg.data_dir)
        self._fatal = fatal
        self.cluster_id = cfg.cluster_id
        self.max_request_bytes = cfg.max_request_bytes
        self.max_txn_ops = MAX_TXN_OPS
        clock = clock or LoopClock()
        self.loop = RaftLoop(cfg, store, member_id, clock, rng or fresh_rng(), fatal, self, raft_tuning)
        self.leases = NodeLeases(cfg, store, clock, self.loop, self.header, self.read_barrier, self._spawn)
        self.membership = Membership(cfg, store, member_id, self.loop, clock, on_removed)
        self.integrity = Integrity(member_id, cfg.name)
        self.integrity.alarms_changed(store.alarms())
        self.maintenance = Maintenance(
            cfg, store, member_id, self.loop, clock, self.header, self.is_learner, self.integrity
        )
        self.quota = Quota(store, cfg.quota_backend_bytes, member_id, cfg.name)
        #: The leader's cross-member hash check, when the process gives the node one (it needs channels).
        self.hash_check: HashCheck | None = None
        self.auth = NodeAuth(store)
        self._subscribers: list[APPLIED_CALLBACK] = []
        self._tasks: dict[asyncio.Task[None], None] = {}  # in start order (``stop`` cancels in it)

    # ------------------------------------------------------------------ lifecycle
    @property
    def staged_snapshots(self) -> StagedSnapshots:
        """The transport's snapshot sink and source."""
        return self.loop.staged_snapshots

    def attach_transport(self, transport: Transport) -> None:
        self.loop.transport = transport
        self.membership.refresh_peers()

    async def start(self) -> None:
        self.notes.remember_members(self.members())
        self._spawn(self.loop.run(), "ready-loop")
        self._spawn(self.loop.ticker(), "ticker")
        self._spawn(self.leases.expiry_loop(), "lease-expiry")
        self._spawn(self.membership.publish_self(), "publish-member")
        self._spawn(
            self.quota.run(lambda r: self.loop.propose(r, ClientSession(), timeout=5), self.has_leader, self.alarms),
            "quota",
        )
        self._spawn(self.integrity.run(lambda r: self.loop.propose(r, ClientSession(), timeout=5)), "integrity")
        if self.hash_check is not None:
            self._spawn(self.hash_check.run(), "hash-check")

    async def stop(self) -> None:
        self.loop.stop()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.loop.reads.fail_all(errors.STOPPED)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Start a task the node keeps (so ``stop`` ends it, and it is never collected while running).

        The node's tasks handle their own errors; one that escapes is a bug that would otherwise pass in
        silence (a lease-expiry loop that died expires no lease again), so it stops the member."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks[task] = None
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        log.error("%s: the node's task %s failed", self.cfg.name, task.get_name(), exc_info=exc)
        self._fatal(f"{self.cfg.name}: the node's task {task.get_name()} failed: {exc!r}")

    def on_peer_messages(self, messages: list[Message]) -> None:
        self.loop.on_peer_messages(messages)

    def on_unreachable(self, node_id: int) -> None:
        self.loop.on_unreachable(node_id)

    def on_peer_gone(self, node_id: int) -> None:
        self.loop.on_peer_gone(node_id)

    def on_snapshot_status(self, node_id: int, ok: bool) -> None:
        self.loop.on_snapshot_status(node_id, ok)

    def is_removed(self, node_id: int) -> bool:
        """Asked by the transport before it hears a sender it does not know: a removed member never is."""
        return self.membership.is_removed(node_id)

    # ------------------------------------------------------------------ what the loop tells (LoopEvents)
    def entry_applied(self, result: AppliedEntry) -> None:
        self.quota.applied()
        kind = result.result.WhichOneof("response") if result.result is not None else None
        if kind == "alarm":
            self.integrity.alarms_changed(self.store.alarms())
        elif kind == "publish_member":
            self.notes.remember_members(self.members())
        if result.events:
            batch = RevisionEvents(result.revision, result.events)
            for callback in list(self._subscribers):
                callback(batch)
        self.leases.entry_applied(result)
        self.membership.entry_applied(result)
        self.auth.entry_applied(result)

    def conf_change_applied(self, cc: ConfChange) -> None:
        self.membership.conf_change_applied(cc)
        self.notes.remember_members(self.members())

    def leadership_changed(self, is_leader: bool) -> None:
        self.leases.leadership_changed(is_leader)

    def snapshot_installed(self) -> None:
        self.membership.snapshot_installed()
        self.leases.snapshot_installed()
        self.integrity.alarms_changed(self.store.alarms())
        self.auth.snapshot_installed()
        self.notes.remember_members(self.members())

    def storage_corrupt(self, exc: CorruptionError) -> None:
        """The loop met damaged data it cannot go on without: the member restarts into quarantine."""
        self.notes.mark_quarantined(str(exc))

    # ------------------------------------------------------------------ Backend: consensus
    def header(self) -> rpc_pb2.ResponseHeader:
        return rpc_pb2.ResponseHeader(
            cluster_id=self.cluster_id,
            member_id=self.member_id,
            revision=self.loop.revision,
            raft_term=self.loop.term,
        )

    async def propose(
        self, request: internal_pb2.InternalRequest, session: ClientSession, timeout: float,
        *, require_leader: bool = False,
    ) -> internal_pb2.ApplyResult:
        self.quota.admit(request)
        return await self.loop.propose(request, session, timeout, require_leader=require_leader)

    async def read_barrier(self, timeout: float, *, require_leader: bool = False) -> None:
        """Return once this member applied everything committed before the call: a linearizable read may be
        served from here. During an election it first waits for the leader (``RaftLoop.leader_elected``)."""
        if not self.loop.has_leader():
            timeout = await self.loop.leader_elected(timeout, require_leader=require_leader)
        await self.loop.reads.barrier(timeout)

    def has_leader(self) -> bool:
        return self.loop.has_leader()

    def refusing(self) -> bool:
        return self.integrity.refusing()

    def found_corruption(self, exc: Exception) -> None:
        self.integrity.found(exc)

    def is_leader(self) -> bool:
        return self.loop.is_leader()

    def is_learner(self) -> bool:
        return self.membership.is_learner()

    # ------------------------------------------------------------------ Backend: authentication
    def auth_state(self) -> AuthState:
        return self.auth.state

    async def token_user(self, token: str, timeout: float) -> str | None:
        return await self.auth.tokens.user_when_applied(token, self.loop.applied, timeout)

    # ------------------------------------------------------------------ Backend: local reads
    def range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        return self.store.range(request)  # its header revision is read in the same view as its data

    def read_only_txn(self, request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        return self.store.read_only_txn(request)  # every header revision from the one view it read

    def current_revision(self) -> int:
        return self.store.revision()

    def compact_revision(self) -> int:
        return self.store.compact_revision()

    def history_page(
        self, start_revision: int, key: bytes, range_end: bytes, *, prev_kv: bool, max_bytes: int
    ) -> HistoryPage:
        return self.store.history_page(start_revision, key, range_end, prev_kv=prev_kv, max_bytes=max_bytes)

    def subscribe_applied(self, callback: APPLIED_CALLBACK) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    # ------------------------------------------------------------------ Backend: leases
    async def lease_keep_alive(self, lease_id: int, timeout: float, *, require_leader: bool = False) -> int:
        return await self.leases.keep_alive(lease_id, timeout, require_leader=require_leader)

    async def lease_time_to_live(
        self, lease_id: int, keys: bool, timeout: float, *, require_leader: bool = False
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        return await self.leases.time_to_live(lease_id, keys, timeout, require_leader=require_leader)

    def lease_ids(self) -> list[int]:
        return self.leases.lease_ids()

    # ------------------------------------------------------------------ Backend: membership
    def members(self) -> list[rpc_pb2.Member]:
        return self.membership.members()

    async def member_add(self, peer_urls: list[str], is_learner: bool, timeout: float) -> rpc_pb2.Member:
        return await self.membership.add(peer_urls, is_learner, timeout)

    async def member_remove(self, member_id: int, timeout: float) -> None:
        await self.membership.remove(member_id, timeout)

    async def member_update(self, member_id: int, peer_urls: list[str], timeout: float) -> None:
        await self.membership.update(member_id, peer_urls, timeout)

    async def member_promote(self, member_id: int, timeout: float) -> None:
        await self.membership.promote(member_id, timeout)

    # ------------------------------------------------------------------ Backend: maintenance
    def status(self) -> rpc_pb2.StatusResponse:
        return self.maintenance.status()

    def alarms(self) -> list[rpc_pb2.AlarmMember]:
        return self.maintenance.alarms()

    async def move_leader(self, target_id: int, timeout: float) -> None:
        await self.maintenance.move_leader(target_id, timeout)

    async def defragment(self) -> None:
        await self.maintenance.defragment()

    async def hash_kv(self, revision: int) -> rpc_pb2.HashKVResponse:
        return await self.maintenance.hash_kv(revision)

    def snapshot_chunks(self) -> AsyncIterator[bytes]:
        return self.maintenance.snapshot_chunks()
