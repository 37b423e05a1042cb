"""The Ready loop: runs the pure Raft core against the node's store and transport, in the contract's order.

One loop owns the core. Each turn it feeds the core everything that arrived since the last turn — ticks,
peer messages, *all* queued proposals, one ReadIndex round for *all* queued reads — and then drains the
core's ``Ready``s, each handled in the order the persistence contract demands:

1. persist the Ready's snapshot, entries and hard state in one store transaction, and wait for it when
   anything must be durable first (entries, snapshot, term or vote);
2. only then send its messages (they may refer to those entries and that vote) — except a leader's Ready
   the core marks ``send_first`` (no term or vote change, no snapshot): its appends leave *before* step 1, so
   the leader's own fsync runs beside the followers' (Raft thesis §10.2.1); the core counts the leader's
   copy towards commit only once ``advance`` reports it durable;
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
import random
from collections.abc import Callable
from typing import Any, NoReturn, Protocol, TypeVar

from raftkv import errors
from raftkv.core.config import Config as RaftConfig
from raftkv.core.rawnode import RawNode
from raftkv.core.types import (
    ConfChange,
    DropReason,
    Entry,
    EntryType,
    Message,
    MessageType,
    ProposalDropped,
    Ready,
    Role,
    SoftState,
)
from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.server.backend import ClientSession
from raftkv.server.batching import BatchWindow
from raftkv.server.config import ServerConfig
from raftkv.server.node.commit_notice import CommitNotice
from raftkv.server.node.read_lease import ReadLease, lease_seconds
from raftkv.server.node.reads import LinearizableReads
from raftkv.server.node.refusals import dropped_error, result_error
from raftkv.server.node.snapshots import SnapshotScheduler, StagedSnapshots
from raftkv.server.node.world import Clock, Fatal, Store, Transport
from raftkv.server.waiters import ProposalWaiters, within
from raftkv.statemachine.applier import AppliedEntry, Committed
from raftkv.storage.env import StorageFull
from raftkv.storage.sealed import CorruptionError

log = logging.getLogger("raftkv.node")
T = TypeVar("T")
ConfRefused = Callable[[ConfChange, errors.EtcdError], None]


class LoopEvents(Protocol):
    """What the rest of the node hears from the loop, always on the loop, in log order."""

    def entry_applied(self, result: AppliedEntry) -> None:
        """A normal entry was applied; called before its proposer is answered."""
        ...

    def conf_change_applied(self, cc: ConfChange) -> None:
        """A membership change took effect (the core already knows)."""
        ...

    def leadership_changed(self, is_leader: bool) -> None: ...

    def snapshot_installed(self) -> None:
        """The state machine was replaced by a snapshot from the leader."""
        ...

    def storage_corrupt(self, exc: CorruptionError) -> None:
        """A write or an apply met damaged data; the loop stops right after (``Fatal``)."""
        ...


class RaftLoop:
    def __init__(
        self,
        cfg: ServerConfig,
        store: Store[Any],
        member_id: int,
        clock: Clock,
        rng: random.Random,
        fatal: Fatal,
        events: LoopEvents,
        raft_tuning: Callable[[RaftConfig], RaftConfig] | None = None,
    ) -> None:
        self._cfg = cfg
        self._store = store
        self._member_id = member_id
        self._clock = clock
        self._fatal = fatal
        self._events = events
        #: Set only with a delay: then, and only then, the core leaves the commit-only append to it.
        delay = cfg.commit_notice_delay_ms / 1000
        self._commit_notice = CommitNotice(clock, delay, self.wake) if delay > 0 else None
        raft_config = RaftConfig(
            id=member_id,
            election_tick=cfg.election_ticks,
            heartbeat_tick=1,
            applied=store.applied_index(),
            pre_vote=True,
            check_quorum=True,
            refuse_votes_after_boot=cfg.leader_lease_reads,
            defer_commit_notice=self._commit_notice is not None,
            logger=self._core_log if log.isEnabledFor(logging.DEBUG) else None,
        )
        self.raw = RawNode(raft_tuning(raft_config) if raft_tuning else raft_config, store.log, rng)
        self.transport: Transport | None = None
        self._proposals: list[bytes] = []
        #: (term, request id, request) of proposals only this member, leading in that term, may make.
        self._leader_proposals: list[tuple[int, int, bytes]] = []
        self._conf_proposals: list[tuple[ConfChange, ConfRefused]] = []
        self._inbox: list[Message] = []
        self._unreachable: set[int] = set()
        self._gone: set[int] = set()
        #: The leader whose process was reported gone, until our leader changes: what waits on it is lost.
        self._dead_leader = 0
        self._ticks = 0
        #: Applies that may run long (``Committed.bounded`` said no), queued on the writer and not yet done.
        self._long_applies = 0
        #: Requests waiting for this member to know a leader (``leader_elected``), woken when it does, in the
        #: order they came: a dict, not a set, whose order would follow the futures' addresses and so make the
        #: simulator's runs of one seed differ.
        self._awaiting_leader: dict[asyncio.Future[None], None] = {}
        self._wake = asyncio.Event()
        self.stopping = False
        self._waiters = ProposalWaiters(rng.getrandbits(62))
        self._batch_window = BatchWindow(cfg.batch_delay_ms / 1000, cfg.batch_min_pending)
        self.reads = LinearizableReads(
            member_id,
            rng.getrandbits(62),
            self.raw,
            clock,
            cfg.election_ms / 1000,
            self.wake,
            lease=self._read_lease(cfg) if cfg.leader_lease_reads else None,
            stale_reads_bug=cfg.planted_bug == "stale-reads",
        )
        self.staged_snapshots = StagedSnapshots(store)
        self.snapshots = SnapshotScheduler(cfg.name, cfg.snapshot_count, store.log.snapshot_meta().index)
        self.soft = SoftState()
        self.term = 0
        self.applied = store.applied_index()
        # Read once per Ready rather than once per response: every RPC's header carries it.
        self.revision = store.revision()
        self.ready_turns = 0
        #: Wake-ups of the loop, whether or not the core had a Ready: each costs a turn of ``_feed_core``.
        self.loop_turns = 0
        self.leader_changes = 0

    def _core_log(self, line: str) -> None:
        log.debug("%s: raft: %s", self._cfg.name, line)

    # ------------------------------------------------------------------ inputs (all on the loop)
    def wake(self) -> None:
        self._wake.set()

    def on_peer_messages(self, messages: list[Message]) -> None:
        """Transport callback: queue for the next turn."""
        self._inbox.extend(messages)
        self._wake.set()

    def on_unreachable(self, node_id: int) -> None:
        self._unreachable.add(node_id)
        self._wake.set()

    def on_peer_gone(self, node_id: int) -> None:
        """Transport callback: ``node_id``'s process is gone (its port refused a reconnect)."""
        self._gone.add(node_id)
        self._wake.set()

    def on_snapshot_status(self, node_id: int, ok: bool) -> None:
        self.raw.report_snapshot(node_id, ok)
        self._wake.set()

    def is_leader(self) -> bool:
        return self.soft.role == Role.LEADER

    def has_leader(self) -> bool:
        return self.soft.leader != 0

    async def propose(
        self,
        request: internal_pb2.InternalRequest,
        session: ClientSession,
        timeout: float,
        *,
        as_leader_of: int = 0,
        require_leader: bool = False,
    ) -> internal_pb2.ApplyResult:
        """Replicate ``request`` and return its result once this member applied it.

        ``as_leader_of``: the request is a decision this member took as the leader of that term (a lease
        expiry, on that leader's clock). It enters the log only from here, and only while this member still
        leads in that term; otherwise it fails with "leader changed". Forwarded, it would be carried out by
        a successor whose own clock says otherwise (it extended every lease on taking office and may since
        have renewed this one), so keys a client was promised would vanish early."""
        if self.stopping:
            raise errors.STOPPED.exception()
        if not self.has_leader():  # checked here so that the common case awaits no extra coroutine
            timeout = await self.leader_elected(timeout, require_leader=require_leader)
        request_id, future = self._waiters.register()
        request.header.id = request_id
        request.header.client_id = session.client_id
        request.header.seq = session.seq
        if as_leader_of:
            self._leader_proposals.append((as_leader_of, request_id, request.SerializeToString()))
        else:
            self._proposals.append(request.SerializeToString())
        self._wake.set()
        try:
            result = await within(future, timeout)
        except TimeoutError:
            self._waiters.forget(request_id)
            raise errors.TIMEOUT.exception() from None
        if result.error:
            raise result_error(result.error).exception()
        return result

    async def leader_elected(self, timeout: float, *, require_leader: bool = False) -> float:
        """Wait, up to ``timeout``, until this member knows a leader (callers ask ``has_leader`` first);
        return the time left.

        A request that needs the leader and arrives during an election waits for its outcome, as in etcd:
        its raft node takes no proposal while it knows no leader, and the request waits within its deadline
        rather than fail. So a write sent by etcdctl or an etcd client (neither retries "no leader" for a
        write) while the cluster elects is served once the election ends. Raises "no leader" if none is known
        in time (nothing was proposed, so a client may retry), and "server stopped" if the member stops.
        ``require_leader`` refuses at once instead, as etcd refuses a call that carries ``hasleader: true``
        (``api/metadata.py``; raftkv's client sends it, and polls the election itself)."""
        if require_leader:
            raise errors.NO_LEADER.exception()
        started = self._clock.now()
        known: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._awaiting_leader[known] = None
        try:
            await within(known, timeout)
        except TimeoutError:
            raise errors.NO_LEADER.exception() from None
        finally:
            self._awaiting_leader.pop(known, None)
        if self.stopping:
            raise errors.STOPPED.exception()
        return max(0.0, timeout - (self._clock.now() - started))

    def _wake_awaiting_leader(self) -> None:
        for known in self._awaiting_leader:
            if not known.done():
                known.set_result(None)
        self._awaiting_leader.clear()

    def propose_conf_change(self, cc: ConfChange, refused: ConfRefused) -> None:
        """Queue a membership change for the next turn; ``refused`` hears if the core drops it."""
        self._conf_proposals.append((cc, refused))
        self._wake.set()

    def transfer_leader(self, target_id: int) -> None:
        self.raw.transfer_leader(target_id)
        self._wake.set()

    def stop(self) -> None:
        self.stopping = True
        if self._commit_notice is not None:
            self._commit_notice.cancel()
        self._wake_awaiting_leader()
        self._wake.set()

    # ------------------------------------------------------------------ the loop
    async def ticker(self) -> None:
        interval = self._cfg.heartbeat_ms / 1000
        while True:
            await self._clock.sleep(interval)
            self._ticks += 1
            self._wake.set()

    async def run(self) -> None:
        try:
            while not self.stopping:
                await self._wake.wait()
                if (pause := self._batch_window.pause_before_turn(len(self._waiters))) > 0:
                    await self._clock.sleep(pause)
                self._wake.clear()
                self.loop_turns += 1
                self._feed_core()
                while self.raw.has_ready():
                    await self._handle_ready(self.raw.ready())
                if self._commit_notice is not None:
                    self._commit_notice.after_turn(self.raw.commit_notice_pending())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail("the Raft loop failed", exc)

    @staticmethod
    def _read_lease(cfg: ServerConfig) -> ReadLease:
        duration = lease_seconds(cfg.election_ticks, cfg.heartbeat_ms)
        if cfg.planted_bug == "read-lease-too-long":
            # PLANTED BUG (simulator self-test only): a lease twenty times what the election timeout allows, so
            # a deposed leader cut off from the others goes on serving reads the new leader's writes made stale.
            duration *= 20
        return ReadLease(duration)

    def _fail(self, what: str, exc: BaseException | None) -> NoReturn:
        """A write the core was promised failed: stop. A full disk is said in one line, as etcd says it."""
        if isinstance(exc, StorageFull):
            self._fatal(f"{self._cfg.name}: {exc}")
        if isinstance(exc, CorruptionError):
            self._events.storage_corrupt(exc)
            self._fatal(f"{self._cfg.name}: {exc}")
        log.error("%s: %s", self._cfg.name, what, exc_info=exc)
        self._fatal(f"{self._cfg.name}: {what}")

    def _feed_core(self) -> None:
        for _ in range(self._ticks):
            self.raw.tick()
        self._ticks = 0
        for node_id in self.snapshots.take_failed_sends():
            self.raw.report_snapshot(node_id, False)
        for node_id in sorted(self._unreachable):
            self.raw.report_unreachable(node_id)
        self._unreachable.clear()
        # A long job on the writer (a huge DeleteRange, a compaction) would hold up any Ready that must be
        # persisted, and with it the heartbeats and answers that keep the leader in office. Until it ends,
        # only work that needs no fsync enters the core: ticks, heartbeats, votes' pre-rounds, ReadIndex.
        # Proposals stay queued (and then go in as one batch); appends and snapshots from the leader wait,
        # as if the network had delayed them. "Until it ends" starts when the job is queued, not once it has
        # run a while: a Ready persisted behind it would wait for all of it, the loop with it.
        stalled = self._long_applies > 0 or self._store.writer.busy_for() > self._cfg.heartbeat_ms / 1000
        inbox, self._inbox = self._inbox, []
        for msg in inbox:
            if stalled and (msg.type == MessageType.SNAP or (msg.type == MessageType.APP and msg.entries)):
                self._inbox.append(msg)
            else:
                self.raw.step(msg)
        # After the inbox: a heartbeat the peer sent before it died must not make us follow it again (and
        # what it sent that is still held back goes: dropping a message is always safe).
        if self._gone:
            self._inbox = [msg for msg in self._inbox if msg.sender not in self._gone]
            for node_id in sorted(self._gone):
                if node_id == self.soft.leader:
                    self._dead_leader = node_id
                self.raw.report_peer_gone(node_id)
            self._gone.clear()
        if not stalled:
            proposals, self._proposals = self._proposals, []
            for term, request_id, data in self._leader_proposals:
                # Checked against the core itself: the inbox stepped just now may have deposed us.
                if self.raw.leads_in(term):
                    proposals.append(data)
                else:
                    log.info("%s: drops a request it made as the leader of term %d: it no longer leads in it",
                             self._cfg.name, term)
                    self._waiters.fail(request_id, errors.LEADER_CHANGED)
            self._leader_proposals = []
            if proposals:
                self._propose(proposals)
            conf, self._conf_proposals = self._conf_proposals, []
            for cc, refused in conf:
                try:
                    self.raw.propose_conf_change(cc)
                except ProposalDropped as exc:
                    refused(cc, dropped_error(exc))
        self.reads.feed(self.applied)
        # Last: if this turn's proposals went out, their appends carried the commit index already.
        if self._commit_notice is not None and self._commit_notice.take_due():
            self.raw.notify_commit()

    def _propose(self, proposals: list[bytes]) -> None:
        """All queued proposals as one batch. If the batch as a whole is refused for its size (the bound on
        uncommitted bytes), each is offered alone, so those that still fit go in as they would have singly."""
        try:
            self.raw.propose_batch(proposals)
            return
        except ProposalDropped as exc:
            if len(proposals) == 1 or exc.reason is not DropReason.UNCOMMITTED_LIMIT:
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
        self._waiters.fail(request.header.id, dropped_error(exc))

    async def _handle_ready(self, rd: Ready) -> None:
        self.ready_turns += 1
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state)
        if rd.hard_state is not None:
            self.term = rd.hard_state.term
        installer = self.staged_snapshots.take(rd.snapshot) if rd.snapshot is not None else None
        # Each committed request is decoded here, once: to tell whether its apply is bounded, and then for the
        # writer thread to apply.
        committed = Committed.decode(rd.committed_entries) if rd.committed_entries else None
        if self._cfg.planted_bug == "apply-before-persist" and committed and installer is None:
            # PLANTED BUG (simulator self-test only): apply and answer before the Ready that committed the
            # entries is durable, as a transaction of its own.
            self._on_applied(committed.last_index, await asyncio.wrap_future(self._store.apply(committed)))
            committed = None
        # A cheap apply rides in this Ready's own transaction (one fsync, not two); one that may run long (a
        # range delete, a compaction) gets a job of its own that the loop does not wait for (see below).
        with_save = committed if committed and installer is None and committed.bounded() else None
        applied_with_save: list[AppliedEntry] | None = None  # set when the loop waited for that transaction
        # A leader's appends leave before its own write, which then runs beside replication (thesis §10.2.1):
        # the core counts the leader's copy only once ``advance`` says it is durable.
        if rd.send_first and rd.messages:  # never with a snapshot (the core's rule)
            self._send(rd.messages)
        if installer is not None or rd.must_sync:
            # Durable before anything depends on it: the appends answered, the vote granted, the snapshot
            # acknowledged, the leader's own copy counted.
            applied_with_save = await asyncio.wrap_future(
                self._store.save(
                    installer, rd.entries, rd.hard_state, with_save or (),
                    durable=self._cfg.planted_bug != "ack-unflushed-append",
                )
            )
        elif rd.hard_state is not None or with_save:
            # Only the commit index moved: no message depends on it being durable (a lost commit index is
            # learned again from the leader). It is saved no later than the entries applied up to it (in the
            # same transaction, or in a job queued before theirs), as a restart requires. Not flushed: a
            # power loss may undo this transaction, which the log repairs (``raftkv/storage/README.md``).
            self._in_background(
                self._store.save(None, (), rd.hard_state, with_save or (), durable=False),
                self._applied_in_background(with_save.last_index) if with_save else None,
            )
        # else: nothing to persist (e.g. the heartbeats of a ReadIndex round).
        if self._cfg.planted_bug == "ack-before-commit" and rd.entries and self.is_leader():
            self._ack_before_commit(rd.entries)
        if rd.messages and not rd.send_first:
            self._send(rd.messages)
        if rd.snapshot is not None:
            self.applied = self._store.applied_index()
            self.revision = self._store.revision()
            self.snapshots.installed(self._store.log.snapshot_meta().index)
            self._events.snapshot_installed()
        if with_save and applied_with_save is not None:
            self._on_applied(with_save.last_index, applied_with_save)
        elif committed and not with_save:
            on_done = self._applied_in_background(committed.last_index, long=True)
            self._in_background(self._store.apply(committed), on_done)
        self.reads.answered(rd.read_states, self.applied)
        self.raw.advance(rd, applied=False)
        if self.snapshots.due(self.applied):
            self._in_background(self._store.create_snapshot(), self.snapshots.taken)

    def _send(self, messages: list[Message]) -> None:
        if self.transport is not None:
            self.transport.send(self.snapshots.usable(messages))

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
                self._fail("a background write failed", None if future.cancelled() else future.exception())
            if on_done is not None:
                on_done(future.result())

        asyncio.wrap_future(job).add_done_callback(done)

    def _on_applied(self, last: int, applied: list[AppliedEntry]) -> None:
        """An apply job finished (they finish in log order): answer its clients, then tell the core."""
        self.applied = max(self.applied, last)
        self.revision = applied[-1].revision if applied else self._store.revision()
        self.raw.applied_to(last)
        for result in applied:
            if result.conf_change is not None:
                self.raw.apply_conf_change(result.conf_change)
                self._events.conf_change_applied(result.conf_change)
                continue
            if result.result is None:
                continue
            self._events.entry_applied(result)
            if result.request_id:
                self._waiters.resolve(result.request_id, result.result)
        if any(r.conf_change is not None for r in applied):
            # The core and the state machine each compute the membership; they must agree (same log).
            core_view, stored = self.raw.status().conf_state, self._store.conf_state()
            assert core_view == stored, f"membership diverged: core {core_view}, state machine {stored}"
        self.reads.applied(self.applied)

    def _holding_back(self) -> bool:
        """Whether ``_feed_core`` left work queued while the writer was busy (it steps it once it is not)."""
        return bool(self._inbox or self._proposals or self._leader_proposals or self._conf_proposals)

    def _applied_in_background(self, last: int, *, long: bool = False) -> Callable[[list[AppliedEntry]], None]:
        """``_on_applied`` for an apply the loop did not wait for, then a wake-up if a turn has work that
        waited for the apply: a Ready the core now holds (after a conf change, say), a snapshot now due, or
        what the loop held back while the writer was busy. An ordinary apply leaves none: its clients were
        answered and its reads released by ``_on_applied`` itself, so a turn would only cost the member CPU
        (at c=1 the leader took one such turn per put). An apply the loop waited for needs no wake-up: the
        loop drains the core's Readys right after it. Call it as the job is queued: a ``long`` apply (one
        that may run long) is counted in ``_long_applies`` from then until it is done, and while it is, the
        loop holds back what would have to be persisted behind it (``_feed_core``)."""
        if long:
            self._long_applies += 1

        def done(applied: list[AppliedEntry]) -> None:
            if long:
                self._long_applies -= 1
            self._on_applied(last, applied)
            if long or self._holding_back() or self.snapshots.would_start(self.applied) or self.raw.has_ready():
                self._wake.set()

        return done

    def _on_soft_state(self, soft: SoftState) -> None:
        was_leader = self.soft.role == Role.LEADER
        if soft.leader != self.soft.leader:
            self.leader_changes += 1
            log.info("%s: leader is now %x (term %d)", self._cfg.name, soft.leader, self.raw.status().hard_state.term)
            if self.soft.leader and self.soft.leader == self._dead_leader:
                # Whatever waits went through a leader whose process is gone and may or may not commit now:
                # say so at once ("leader changed", an ambiguous outcome the client retries under the same
                # sequence number) instead of letting it wait out its timeout for an answer a dead leader
                # will never send. A leader that is merely deposed may still see its entries committed by
                # the next one, so what waits on it keeps waiting, as in etcd.
                self._waiters.fail_all(errors.LEADER_CHANGED)
            self._dead_leader = 0
            if soft.leader:
                self.reads.leader_changed()
        self.soft = soft
        if soft.leader:
            self._wake_awaiting_leader()
        if (soft.role == Role.LEADER) != was_leader:
            self._events.leadership_changed(soft.role == Role.LEADER)
