"""The node driver: runs the pure Raft core on asyncio, against LMDB storage and the gRPC peer transport.

One loop owns the core. Each turn it feeds the core everything that arrived since the last turn — ticks,
peer messages, *all* queued proposals, one ReadIndex round for *all* queued reads — and then drains the
core's ``Ready``s, each handled in the order the persistence contract demands:

1. persist the Ready's snapshot, entries and hard state in one LMDB write transaction on the writer thread,
   and wait for it when anything must be durable first (entries, snapshot, term or vote);
2. only then send its messages (they may refer to those entries and that vote);
3. apply its committed entries, recording the applied index in the same transaction as the state it
   describes; when that commits, the waiting RPCs are answered, watchers get their events and the core is
   told (``RawNode.applied_to``). An apply of bounded cost (puts, single-key deletes, small txns) rides in
   step 1's transaction, so a Ready costs one fsync; one that may run long (a range delete, a compaction,
   a lease revoke) is queued as the next writer job and the loop does *not* wait for it;
4. ``advance`` (with ``applied=False``).

So a long apply (a DeleteRange of many keys) never stops ticks and heartbeats: while the writer is busy for
longer than a heartbeat, only work that needs no fsync enters the core (see ``_feed_core``). Snapshots and
log compaction run as background writer jobs too. Batching falls out of this shape: while one Ready is being
written, new proposals queue up and the next turn appends them all at once; under load a short pause before
each turn (``batching.BatchWindow``) lets a turn gather more.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Protocol, TypeVar

from raftkv import errors
from raftkv.api.backend import ClientSession, RevisionEvents
from raftkv.core.config import Config as RaftConfig
from raftkv.core.rawnode import RawNode
from raftkv.core.types import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    Message,
    MessageType,
    ProposalDropped,
    Ready,
    SnapshotMeta,
    Role,
    SoftState,
)
from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.server.batching import BatchWindow
from raftkv.server.config import ServerConfig, host_port, member_id_for
from raftkv.server.lessor import Lessor, revoke_limit
from raftkv.server.waiters import ProposalWaiters, ReadWaiters
from raftkv.statemachine.applier import AppliedEntry, apply_is_bounded
from raftkv.statemachine.node_store import NodeStore, SnapshotInstaller
from raftkv.transport.peer import PeerTransport

log = logging.getLogger("raftkv.node")

API_VERSION = "3.4.0"  # the etcd API level raftkv serves; etcdctl prints it in `endpoint status`
LEASE_CHECK_INTERVAL = 0.5  # seconds, as etcd's lessor
QUOTA_CHECK_INTERVAL = 1.0  # seconds
MAX_LEASE_REVOKES_PER_CHECK = revoke_limit(LEASE_CHECK_INTERVAL)
APPLIED_CALLBACK = Callable[[RevisionEvents], None]
T = TypeVar("T")


class LeaseForwarder(Protocol):
    """Asks the leader (over the peer link) to renew a lease or report its remaining TTL."""

    async def __call__(self, leader_id: int, what: str, lease_id: int, timeout: float) -> int: ...


class Node:
    """A raftkv member. Implements ``raftkv.api.backend.Backend`` for the client-facing services."""

    def __init__(self, cfg: ServerConfig, store: NodeStore, member_id: int) -> None:
        self.cfg = cfg
        self.store = store
        self.member_id = member_id
        self.cluster_id = cfg.cluster_id
        self.max_request_bytes = cfg.max_request_bytes
        self.max_txn_ops = 128
        self._rng = random.Random(int.from_bytes(os.urandom(8), "big"))
        self.raw = RawNode(
            RaftConfig(
                id=member_id,
                election_tick=cfg.election_ticks,
                heartbeat_tick=1,
                applied=store.applied_index(),
                pre_vote=True,
                check_quorum=True,
                logger=self._core_log if log.isEnabledFor(logging.DEBUG) else None,
            ),
            store.log,
            self._rng,
        )
        self.transport: PeerTransport | None = None
        self._peer_ids: set[int] = set()
        self.lessor = Lessor()
        self._proposals: list[bytes] = []
        self._conf_proposals: list[ConfChange] = []
        self._inbox: list[Message] = []
        self._unreachable: set[int] = set()
        self.lease_forwarder: LeaseForwarder | None = None
        self._ticks = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._waiters = ProposalWaiters(self._rng.getrandbits(62))
        self._batch_window = BatchWindow(cfg.batch_delay_ms / 1000, cfg.batch_min_pending)
        self._reads = ReadWaiters(member_id, self._rng.getrandbits(62))
        self._read_round_timer: asyncio.TimerHandle | None = None
        self._conf_waiters: dict[tuple[int, int], asyncio.Future[None]] = {}
        self._subscribers: list[APPLIED_CALLBACK] = []
        self.staged_snapshots = StagedSnapshots(store)
        self._soft = SoftState()
        self._term = 0
        self._applied = store.applied_index()
        # Read once per Ready rather than once per response: every RPC's header carries it.
        self._revision = store.revision()
        self._is_learner = False
        self._refresh_conf()
        self._snapshot_index = store.log.snapshot_meta().index
        self._tasks: list[asyncio.Task[None]] = []
        self._snapshot_wanted = False
        self._snapshotting = False
        self._failed_snapshot_sends: set[int] = set()
        self.ready_turns = 0
        self.leader_changes = 0

    def _core_log(self, line: str) -> None:
        log.debug("%s: raft: %s", self.cfg.name, line)

    # ------------------------------------------------------------------ lifecycle
    def attach_transport(self, transport: PeerTransport) -> None:
        self.transport = transport
        self._refresh_peers()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._ready_loop(), name="ready-loop"),
            asyncio.create_task(self._ticker(), name="ticker"),
            asyncio.create_task(self._lease_expiry_loop(), name="lease-expiry"),
            asyncio.create_task(self._publish_self(), name="publish-member"),
            asyncio.create_task(self._quota_loop(), name="quota"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._reads.fail_all(errors.STOPPED)

    def on_peer_messages(self, messages: list[Message]) -> None:
        """Transport callback (on the loop): queue for the next turn."""
        self._inbox.extend(messages)
        self._wake.set()

    def on_unreachable(self, node_id: int) -> None:
        self._unreachable.add(node_id)
        self._wake.set()

    def on_snapshot_status(self, node_id: int, ok: bool) -> None:
        self.raw.report_snapshot(node_id, ok)
        self._wake.set()

    # ------------------------------------------------------------------ the loop
    async def _ticker(self) -> None:
        interval = self.cfg.heartbeat_ms / 1000
        while True:
            await asyncio.sleep(interval)
            self._ticks += 1
            self._wake.set()

    async def _ready_loop(self) -> None:
        try:
            while not self._stopping:
                await self._wake.wait()
                if (pause := self._batch_window.pause_before_turn(len(self._waiters))) > 0:
                    await asyncio.sleep(pause)
                self._wake.clear()
                self._feed_core()
                while self.raw.has_ready():
                    await self._handle_ready(self.raw.ready())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: the Raft loop failed; stopping this member to protect the data", self.cfg.name)
            os._exit(70)

    def _feed_core(self) -> None:
        for _ in range(self._ticks):
            self.raw.tick()
        self._ticks = 0
        for node_id in sorted(self._failed_snapshot_sends):
            self.raw.report_snapshot(node_id, False)
        self._failed_snapshot_sends.clear()
        for node_id in sorted(self._unreachable):
            self.raw.report_unreachable(node_id)
        self._unreachable.clear()
        # A long job on the writer (a huge DeleteRange, a compaction) would hold up any Ready that must be
        # persisted, and with it the heartbeats and answers that keep the leader in office. Until it ends,
        # only work that needs no fsync enters the core: ticks, heartbeats, votes' pre-rounds, ReadIndex.
        # Proposals stay queued (and then go in as one batch); appends and snapshots from the leader wait,
        # as if the network had delayed them.
        stalled = self.store.writer.busy_for() > self.cfg.heartbeat_ms / 1000
        inbox, self._inbox = self._inbox, []
        for msg in inbox:
            if stalled and (msg.type == MessageType.SNAP or (msg.type == MessageType.APP and msg.entries)):
                self._inbox.append(msg)
            else:
                self.raw.step(msg)
        if not stalled:
            proposals, self._proposals = self._proposals, []
            if proposals:
                self._propose(proposals)
            conf, self._conf_proposals = self._conf_proposals, []
            for cc in conf:
                try:
                    self.raw.propose_conf_change(cc)
                except ProposalDropped as exc:
                    self._fail_conf(cc, _dropped_error(str(exc)))
        now = time.monotonic()
        self._reads.requeue_stale(now, self.cfg.election_ms / 1000)
        if self._reads.has_queued():
            if self.cfg.planted_bug == "stale-reads":
                if (taken := self._reads.take_queued(now)) is not None:
                    self._reads.answered(taken[0], 0, self._applied)  # served at once, nobody asked
                return
            taken = self._reads.take_queued(now)
            if taken is not None:
                ctx, _ = taken
                try:
                    self.raw.read_index(ctx)
                except ProposalDropped as exc:
                    self._reads.fail_round(ctx, _dropped_error(str(exc)))
            elif (due := self._reads.round_due(now)) is not None and self._read_round_timer is None:
                self._read_round_timer = asyncio.get_running_loop().call_later(due - now, self._start_due_round)

    def _start_due_round(self) -> None:
        self._read_round_timer = None
        self._wake.set()

    def _propose(self, proposals: list[bytes]) -> None:
        """All queued proposals as one batch. If the batch as a whole is refused for its size (the bound on
        uncommitted bytes), each is offered alone, so those that still fit go in as they would have singly."""
        try:
            self.raw.propose_batch(proposals)
            return
        except ProposalDropped as exc:
            if len(proposals) == 1 or "uncommitted" not in str(exc):
                for data in proposals:
                    self._fail_proposal(data, exc)
                return
        for data in proposals:
            try:
                self.raw.propose(data)
            except ProposalDropped as exc:
                self._fail_proposal(data, exc)

    def _fail_proposal(self, data: bytes, exc: ProposalDropped) -> None:
        request = internal_pb2.InternalRequest.FromString(data)
        self._waiters.fail(request.header.id, _dropped_error(str(exc)))

    async def _handle_ready(self, rd: Ready) -> None:
        self.ready_turns += 1
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state)
        if rd.hard_state is not None:
            self._term = rd.hard_state.term
        installer = self.staged_snapshots.take(rd.snapshot) if rd.snapshot is not None else None
        committed = rd.committed_entries
        # A cheap apply rides in this Ready's own transaction (one fsync, not two); one that may run long (a
        # range delete, a compaction) gets a job of its own that the loop does not wait for (see below).
        with_save = committed if committed and installer is None and apply_is_bounded(committed) else []
        applied_with_save: list[AppliedEntry] | None = None  # set when the loop waited for that transaction
        if installer is not None or rd.must_sync:
            applied_with_save = await asyncio.wrap_future(
                self.store.save(installer, rd.entries, rd.hard_state, with_save)
            )
        elif rd.hard_state is not None or with_save:
            # Only the commit index moved: no message depends on it being durable (a lost commit index is
            # learned again from the leader). It is saved no later than the entries applied up to it (in the
            # same transaction, or in a job queued before theirs), as a restart requires.
            self._in_background(
                self.store.save(None, (), rd.hard_state, with_save),
                self._applied_in_background(with_save[-1].index) if with_save else None,
            )
        # else: nothing to persist (e.g. the heartbeats of a ReadIndex round).
        if self.cfg.planted_bug == "ack-before-commit" and rd.entries and self.is_leader():
            self._ack_before_commit(rd.entries)
        if rd.messages and self.transport is not None:
            self.transport.send(self._without_unusable_snapshots(rd.messages))
        if rd.snapshot is not None:
            self._applied = self.store.applied_index()
            self._revision = self.store.revision()
            self._after_snapshot_install()
        if with_save and applied_with_save is not None:
            self._on_applied(with_save[-1].index, applied_with_save)
        elif committed and not with_save:
            last = committed[-1].index
            self._in_background(self.store.apply(committed), self._applied_in_background(last))
        for rs in rd.read_states:
            self._reads.answered(rs.request_ctx, rs.index, self._applied)
        self._reads.applied(self._applied)
        self.raw.advance(rd, applied=False)
        self._maybe_snapshot()

    def _ack_before_commit(self, entries: list[Entry]) -> None:
        """PLANTED BUG (fault-injection self-test only): answer puts once the leader's own copy is durable,
        before a quorum has it, so a leader lost right after loses acknowledged writes."""
        for entry in entries:
            if entry.type != EntryType.NORMAL or not entry.data:
                continue
            request = internal_pb2.InternalRequest.FromString(entry.data)
            if request.WhichOneof("request") == "put":
                self._waiters.resolve(request.header.id, internal_pb2.ApplyResult(put=rpc_pb2.PutResponse()))

    def _in_background(
        self,
        job: concurrent.futures.Future[T],
        on_done: Callable[[T], None] | None = None,
    ) -> None:
        """Run a writer job the loop does not wait for. Writer jobs run in submission order, so background
        jobs keep their place relative to awaited ones; a failed one stops the member (as a failed Ready
        would), since the state on disk no longer matches what the core was told."""

        def done(future: asyncio.Future[T]) -> None:
            if future.cancelled() or future.exception() is not None:
                log.error("%s: a background write failed; stopping this member to protect the data", self.cfg.name,
                          exc_info=None if future.cancelled() else future.exception())
                os._exit(70)
            if on_done is not None:
                on_done(future.result())

        asyncio.wrap_future(job).add_done_callback(done)

    def _on_applied(self, last: int, applied: list[AppliedEntry]) -> None:
        """An apply job finished (they finish in log order): answer its clients, then tell the core."""
        self._applied = max(self._applied, last)
        self._revision = applied[-1].revision if applied else self.store.revision()
        self.raw.applied_to(last)
        for result in applied:
            self._after_apply(result)
        if any(r.conf_change is not None for r in applied):
            # The core and the state machine each compute the membership; they must agree (same log).
            core_view, stored = self.raw.status().conf_state, self.store.conf_state()
            assert core_view == stored, f"membership diverged: core {core_view}, state machine {stored}"
        self._reads.applied(self._applied)

    def _applied_in_background(self, last: int) -> Callable[[list[AppliedEntry]], None]:
        """``_on_applied`` for an apply the loop did not wait for, then a wake-up: the core may hold a Ready
        that waited for it (a conf change, a snapshot). An apply the loop waited for needs none: the loop
        drains the core's Readys right after it."""

        def done(applied: list[AppliedEntry]) -> None:
            self._on_applied(last, applied)
            self._wake.set()

        return done

    def _without_unusable_snapshots(self, messages: list[Message]) -> list[Message]:
        """Hold back a snapshot its receiver would refuse: one taken before the receiver joined does not list
        it as a member. Take a fresh one instead (the membership change is applied by now) and tell the core
        the send failed, so it retries with the new snapshot."""
        kept = []
        for msg in messages:
            snap = msg.snapshot
            if msg.type == MessageType.SNAP and snap is not None and msg.to not in snap.conf_state.members():
                self._snapshot_wanted = True
                self._failed_snapshot_sends.add(msg.to)  # reported to the core next turn, after advance
                continue
            kept.append(msg)
        return kept

    def _after_apply(self, result: AppliedEntry) -> None:
        if result.conf_change is not None:
            cc = result.conf_change
            self.raw.apply_conf_change(cc)
            self._refresh_peers()
            self._refresh_conf()
            future = self._conf_waiters.pop((cc.node_id, int(cc.type)), None)
            if future is not None and not future.done():
                future.set_result(None)
            if cc.type == ConfChangeType.REMOVE_NODE and cc.node_id == self.member_id:
                log.warning("%s: this member was removed from the cluster", self.cfg.name)
            return
        if result.result is None:
            return
        if result.events:
            batch = RevisionEvents(result.revision, result.events)
            for callback in list(self._subscribers):
                callback(batch)
        kind = result.result.WhichOneof("response")
        if kind == "lease_grant" and not result.result.error:
            self.lessor.grant(result.result.lease_grant.ID, result.result.lease_grant.TTL, time.monotonic())
        if result.request_id:
            self._waiters.resolve(result.request_id, result.result)

    def _after_snapshot_install(self) -> None:
        self._snapshot_index = self.store.log.snapshot_meta().index
        self._refresh_peers()
        self._refresh_conf()
        if self.is_leader():
            self.lessor.promote(self._lease_ttls(), time.monotonic(), self.cfg.election_ms / 1000)
        log.info("%s: installed a snapshot at index %d", self.cfg.name, self._snapshot_index)

    def _maybe_snapshot(self) -> None:
        """Snapshot and compact in the background once enough was applied; one at a time."""
        if self._snapshotting:
            return
        if self._applied - self._snapshot_index < self.cfg.snapshot_count and not self._snapshot_wanted:
            return
        self._snapshot_wanted = False
        self._snapshotting = True
        self._in_background(self.store.create_snapshot(), self._on_snapshot)

    def _on_snapshot(self, meta: SnapshotMeta) -> None:
        self._snapshotting = False
        self._snapshot_index = max(self._snapshot_index, meta.index)
        log.info("%s: snapshot at index %d, log compacted", self.cfg.name, meta.index)

    def _on_soft_state(self, soft: SoftState) -> None:
        was_leader = self._soft.role == Role.LEADER
        if soft.leader != self._soft.leader:
            self.leader_changes += 1
            log.info("%s: leader is now %x (term %d)", self.cfg.name, soft.leader, self.raw.status().hard_state.term)
        if soft.role == Role.LEADER and not was_leader:
            extend = self.cfg.election_ms / 1000
            self.lessor.promote(self._lease_ttls(), time.monotonic(), extend)
            log.info("%s: became leader; leases extended by %.1fs", self.cfg.name, extend)
        elif soft.role != Role.LEADER and was_leader:
            self.lessor.demote()
        self._soft = soft

    def _refresh_conf(self) -> None:
        """Cache what admission asks on every RPC; the configuration only changes on apply or snapshot."""
        self._is_learner = self.member_id in self.raw.status().conf_state.learners

    def _refresh_peers(self) -> None:
        if self.transport is None:
            return
        known = [(m.ID, m.name, m.peerURLs[0]) for m in self.store.members() if m.peerURLs]
        if not known:
            # A member that joined an existing cluster knows nobody until the leader's snapshot or log
            # arrives, yet must answer the leader: dial the peers named in --initial-cluster meanwhile.
            known = [(member_id_for(self.cfg.cluster_token, url), name, url) for name, url in self.cfg.initial_cluster]
        wanted: dict[int, str] = {}
        for member_id, name, url in known:
            if member_id != self.member_id:
                wanted[member_id] = self.cfg.peer_dial_overrides.get(name) or host_port(url)
        for node_id in self._peer_ids - wanted.keys():
            self.transport.remove_peer(node_id)
        for node_id, address in wanted.items():
            self.transport.set_peer(node_id, address)
        self._peer_ids = set(wanted)

    # ------------------------------------------------------------------ leases (leader side timing)
    async def _lease_expiry_loop(self) -> None:
        while True:
            await asyncio.sleep(LEASE_CHECK_INTERVAL)
            if not self.is_leader():
                continue
            for lease_id in self.lessor.expired(time.monotonic(), MAX_LEASE_REVOKES_PER_CHECK):
                request = internal_pb2.InternalRequest(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=lease_id))
                asyncio.create_task(self._revoke_expired(request, lease_id))

    async def _revoke_expired(self, request: internal_pb2.InternalRequest, lease_id: int) -> None:
        try:
            await self.propose(request, ClientSession(), timeout=self.cfg.election_ms / 1000 * 2)
        except errors.EtcdException as exc:
            if exc.error == errors.LEASE_NOT_FOUND:
                self.lessor.revoke(lease_id)  # revoked meanwhile by a client
                return
            # The lessor offers the lease again after its retry interval.
            log.info("%s: revoking expired lease %x failed (%s); will retry", self.cfg.name, lease_id, exc)

    async def _quota_loop(self) -> None:
        """Raise the NOSPACE alarm (through the log, so every member refuses writes alike) once this
        member's database passes the quota; like etcd, only `alarm disarm` after compaction clears it."""
        while True:
            await asyncio.sleep(QUOTA_CHECK_INTERVAL)
            if not self.store.over_quota() or not self.has_leader():
                continue
            if any(a.memberID == self.member_id and a.alarm == rpc_pb2.NOSPACE for a in self.alarms()):
                continue
            log.warning("%s: database size %d passed the quota; raising the NOSPACE alarm", self.cfg.name, self.store.db_size_in_use())
            alarm = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=self.member_id, alarm=rpc_pb2.NOSPACE)
            try:
                await self.propose(internal_pb2.InternalRequest(alarm=alarm), ClientSession(), timeout=5)
            except errors.EtcdException as exc:
                log.info("%s: raising the NOSPACE alarm failed (%s); will retry", self.cfg.name, exc)

    async def _publish_self(self) -> None:
        """Announce name and client URLs through the log once, so MemberList shows them everywhere."""
        member = rpc_pb2.Member(
            ID=self.member_id,
            name=self.cfg.name,
            peerURLs=list(self.cfg.advertise_peer_urls),
            clientURLs=list(self.cfg.advertise_client_urls),
        )
        while True:
            current = {m.ID: m for m in self.store.members()}.get(self.member_id)
            if current is not None and current.name == member.name and list(current.clientURLs) == list(member.clientURLs):
                return
            if self.has_leader():
                try:
                    await self.propose(internal_pb2.InternalRequest(publish_member=member), ClientSession(), timeout=5)
                    return
                except errors.EtcdException:
                    pass
            await asyncio.sleep(self.cfg.election_ms / 1000 / 2)

    # ------------------------------------------------------------------ Backend: consensus
    def header(self) -> rpc_pb2.ResponseHeader:
        return rpc_pb2.ResponseHeader(
            cluster_id=self.cluster_id,
            member_id=self.member_id,
            revision=self._revision,
            raft_term=self._term,
        )

    async def propose(
        self, request: internal_pb2.InternalRequest, session: ClientSession, timeout: float
    ) -> internal_pb2.ApplyResult:
        if self._stopping:
            raise errors.STOPPED.exception()
        if not self.has_leader():
            raise errors.NO_LEADER.exception()
        request_id, future = self._waiters.register()
        request.header.id = request_id
        request.header.client_id = session.client_id
        request.header.seq = session.seq
        self._proposals.append(request.SerializeToString())
        self._wake.set()
        try:
            result = await _within(future, timeout)
        except TimeoutError:
            self._waiters.forget(request_id)
            raise errors.TIMEOUT.exception() from None
        if result.error:
            raise (errors.from_message(result.error) or errors.EtcdError(_UNKNOWN, result.error)).exception()
        return result

    async def read_barrier(self, timeout: float) -> None:
        if not self.has_leader():
            raise errors.NO_LEADER.exception()
        future = self._reads.enqueue()
        self._wake.set()
        try:
            await _within(future, timeout)
        except TimeoutError:
            raise errors.TIMEOUT.exception() from None

    def has_leader(self) -> bool:
        return self._soft.leader != 0

    def is_leader(self) -> bool:
        return self._soft.role == Role.LEADER

    def is_learner(self) -> bool:
        return self._is_learner

    # ------------------------------------------------------------------ Backend: local reads
    def range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        response = self.store.range(request)  # its header revision is read in the same view as its data
        header = response.header
        header.cluster_id, header.member_id, header.raft_term = self.cluster_id, self.member_id, self._term
        return response

    def current_revision(self) -> int:
        return self.store.revision()

    def compact_revision(self) -> int:
        return self.store.compact_revision()

    def events_since(self, start_revision: int, key: bytes, range_end: bytes) -> list[RevisionEvents]:
        return [
            RevisionEvents(revision, tuple(events))
            for revision, events in self.store.events_since(start_revision, key, range_end)
        ]

    def subscribe_applied(self, callback: APPLIED_CALLBACK) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    # ------------------------------------------------------------------ Backend: leases
    async def lease_keep_alive(self, lease_id: int, timeout: float) -> int:
        if self.is_leader():
            return await self.local_lease_query("keep_alive", lease_id)
        return await self._forward_to_leader("keep_alive", lease_id, timeout)

    async def lease_time_to_live(
        self, lease_id: int, keys: bool, timeout: float
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        response = rpc_pb2.LeaseTimeToLiveResponse(header=self.header(), ID=lease_id, TTL=-1)
        found = self.store.lease(lease_id)
        if found is None:
            return response
        lease, attached = found
        response.grantedTTL = lease.granted_ttl
        if keys:
            response.keys.extend(attached)
        if self.is_leader():
            response.TTL = await self.local_lease_query("time_to_live", lease_id)
        else:
            response.TTL = await self._forward_to_leader("time_to_live", lease_id, timeout)
        return response

    def lease_ids(self) -> list[int]:
        return [lease.id for lease in self.store.leases()]

    def _lease_ttls(self) -> dict[int, int]:
        return {lease.id: lease.granted_ttl for lease in self.store.leases()}

    async def _forward_to_leader(self, what: str, lease_id: int, timeout: float) -> int:
        leader = self._soft.leader
        if leader == 0:
            raise errors.NO_LEADER.exception()
        if self.lease_forwarder is None:
            raise errors.NOT_CAPABLE.exception()
        return await self.lease_forwarder(leader, what, lease_id, timeout)

    async def local_lease_query(self, what: str, lease_id: int) -> int:
        """What a follower asks the leader: ``keep_alive`` renews; ``time_to_live`` reads the remaining TTL."""
        if not self.is_leader():
            raise errors.NOT_LEADER.exception()
        now = time.monotonic()
        if self.store.lease(lease_id) is None:
            self.lessor.revoke(lease_id)
            return 0 if what == "keep_alive" else -1
        if what == "keep_alive":
            return self.lessor.renew(lease_id, now)
        remaining = self.lessor.remaining(lease_id, now)
        return -1 if remaining is None else math.ceil(remaining)

    # ------------------------------------------------------------------ Backend: membership
    def members(self) -> list[rpc_pb2.Member]:
        learners = self.raw.status().conf_state.learners
        out = []
        for member in self.store.members():
            m = rpc_pb2.Member()
            m.CopyFrom(member)
            m.isLearner = member.ID in learners
            out.append(m)
        return out

    async def _change_membership(self, cc: ConfChange, timeout: float) -> None:
        if not self.has_leader():
            raise errors.NO_LEADER.exception()
        key = (cc.node_id, int(cc.type))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._conf_waiters[key] = future
        self._conf_proposals.append(cc)
        self._wake.set()
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self._conf_waiters.pop(key, None)
            raise errors.TIMEOUT.exception() from None

    def _fail_conf(self, cc: ConfChange, error: errors.EtcdError) -> None:
        future = self._conf_waiters.pop((cc.node_id, int(cc.type)), None)
        if future is not None and not future.done():
            future.set_exception(error.exception())

    async def member_add(self, peer_urls: list[str], is_learner: bool, timeout: float) -> rpc_pb2.Member:
        existing = self.store.members()
        for member in existing:
            if set(member.peerURLs) & set(peer_urls):
                raise errors.PEER_URL_EXISTS.exception()
        member_id = member_id_for(self.cfg.cluster_token, peer_urls[0])
        if any(m.ID == member_id for m in existing):
            raise errors.MEMBER_EXISTS.exception()
        member = rpc_pb2.Member(ID=member_id, peerURLs=peer_urls, isLearner=is_learner)
        context = internal_pb2.MemberContext(member=member).SerializeToString()
        kind = ConfChangeType.ADD_LEARNER if is_learner else ConfChangeType.ADD_VOTER
        await self._change_membership(ConfChange(kind, member_id, context), timeout)
        return member

    async def member_remove(self, member_id: int, timeout: float) -> None:
        if not any(m.ID == member_id for m in self.store.members()):
            raise errors.MEMBER_NOT_FOUND.exception()
        await self._change_membership(ConfChange(ConfChangeType.REMOVE_NODE, member_id), timeout)

    async def member_update(self, member_id: int, peer_urls: list[str], timeout: float) -> None:
        current = {m.ID: m for m in self.store.members()}.get(member_id)
        if current is None:
            raise errors.MEMBER_NOT_FOUND.exception()
        member = rpc_pb2.Member()
        member.CopyFrom(current)
        del member.peerURLs[:]
        member.peerURLs.extend(peer_urls)
        await self.propose(internal_pb2.InternalRequest(publish_member=member), ClientSession(), timeout)

    async def member_promote(self, member_id: int, timeout: float) -> None:
        status = self.raw.status()
        if member_id not in status.conf_state.learners:
            if member_id in status.conf_state.voters:
                raise errors.MEMBER_NOT_LEARNER.exception()
            raise errors.MEMBER_NOT_FOUND.exception()
        if self.is_leader():
            progress = status.progress.get(member_id)
            if progress is None or progress.match < status.hard_state.commit * 9 // 10:
                raise errors.LEARNER_NOT_READY.exception()
        current = {m.ID: m for m in self.store.members()}[member_id]
        context = internal_pb2.MemberContext(member=current).SerializeToString()
        await self._change_membership(ConfChange(ConfChangeType.ADD_VOTER, member_id, context), timeout)

    # ------------------------------------------------------------------ Backend: maintenance
    def status(self) -> rpc_pb2.StatusResponse:
        status = self.raw.status()
        return rpc_pb2.StatusResponse(
            header=self.header(),
            version=API_VERSION,
            dbSize=self.store.db_size(),
            dbSizeInUse=self.store.db_size_in_use(),
            leader=self._soft.leader,
            raftIndex=self.store.log.last_index(),
            raftTerm=status.hard_state.term,
            raftAppliedIndex=self._applied,
            errors=[f"memberID:{a.memberID} alarm:{rpc_pb2.AlarmType.Name(a.alarm)} " for a in self.alarms()],
            isLearner=self.is_learner(),
        )

    def alarms(self) -> list[rpc_pb2.AlarmMember]:
        return self.store.alarms()

    async def move_leader(self, target_id: int, timeout: float) -> None:
        if not self.is_leader():
            raise errors.NOT_LEADER.exception()
        if target_id not in self.raw.status().conf_state.voters or target_id == self.member_id:
            raise errors.BAD_LEADER_TRANSFEREE.exception()
        self.raw.transfer_leader(target_id)
        self._wake.set()
        deadline = time.monotonic() + timeout
        while self._soft.leader != target_id:
            if time.monotonic() >= deadline:
                raise errors.TIMEOUT.exception()
            await asyncio.sleep(self.cfg.heartbeat_ms / 1000)

    async def defragment(self) -> None:
        await asyncio.wrap_future(self.store.defragment())

    def hash_kv(self, revision: int) -> rpc_pb2.HashKVResponse:
        hash_value, compact, _ = self.store.hash_kv(revision)
        header = self.header()
        return rpc_pb2.HashKVResponse(header=header, hash=hash_value & 0xFFFFFFFF, compact_revision=compact)

    async def snapshot_chunks(self) -> AsyncIterator[bytes]:
        """The state machine as of the last applied index, in the snapshot format, from one read view."""
        meta = SnapshotMeta(index=self._applied, term=self._term, conf_state=self.store.conf_state())
        chunks = self.store.open_snapshot(meta)
        while True:
            chunk = await asyncio.to_thread(next, chunks, None)
            if chunk is None:
                return
            yield chunk


async def _within(future: asyncio.Future[T], timeout: float) -> T:
    """``asyncio.wait_for`` for a bare future, minus its extra waiter future and callbacks: a timer fails
    the future itself with ``TimeoutError``. Every client request waits this way, so the saving counts."""

    def expire() -> None:
        if not future.done():
            future.set_exception(TimeoutError())

    timer = future.get_loop().call_later(timeout, expire)
    try:
        return await future
    finally:
        timer.cancel()


def _dropped_error(reason: str) -> errors.EtcdError:
    if "no leader" in reason:
        return errors.NO_LEADER
    if "transfer" in reason:
        return errors.LEADER_CHANGED
    if "uncommitted" in reason:
        return errors.TOO_MANY_REQUESTS
    return errors.EtcdError(_UNKNOWN, f"etcdserver: {reason}")


_UNKNOWN = errors.NO_LEADER.code.__class__.UNKNOWN


class StagedSnapshots:
    """Snapshot data received from the leader, waiting for the core to accept its SNAP message.

    The transport's sink (``begin``) and source (``open``): received data is staged to a file first (never
    all in memory); the core then decides. If it accepts, ``Ready.snapshot`` names the meta and the node
    installs the staged data in that Ready's transaction; a stale one is discarded when a newer one arrives.
    """

    def __init__(self, store: NodeStore) -> None:
        self._store = store
        self._staged: dict[tuple[int, int], SnapshotInstaller] = {}

    def open(self, meta: SnapshotMeta) -> Iterator[bytes]:
        return self._store.open_snapshot(meta)

    def begin(self, meta: SnapshotMeta) -> _StagedWriter:
        for key in [k for k in self._staged if k <= (meta.index, meta.term)]:
            self._staged.pop(key).abort()
        installer = self._store.begin_snapshot_install(meta)
        self._staged[(meta.index, meta.term)] = installer
        return _StagedWriter(self, (meta.index, meta.term), installer)

    def take(self, meta: SnapshotMeta) -> SnapshotInstaller:
        installer = self._staged.pop((meta.index, meta.term), None)
        assert installer is not None, f"the core accepted snapshot {meta} that was never received"
        return installer


class _StagedWriter:
    """What the transport writes a received snapshot into; ``commit`` just leaves it staged for the core."""

    def __init__(self, owner: StagedSnapshots, key: tuple[int, int], installer: SnapshotInstaller) -> None:
        self._owner, self._key, self._installer = owner, key, installer

    def write(self, data: bytes) -> None:
        self._installer.write(data)

    def commit(self) -> None:
        """Complete: the SNAP message is delivered next, and the core decides whether to install it."""

    def abort(self) -> None:
        self._owner._staged.pop(self._key, None)
        self._installer.abort()
