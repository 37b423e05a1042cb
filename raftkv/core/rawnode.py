"""The synchronous API drivers use: feed inputs, collect a ``Ready``, persist/send/apply it, ``advance``.

``RawNode`` wraps ``Raft`` with the bookkeeping of what has already been handed to the driver (the last
soft/hard state, which entries are being persisted and applied), so that each ``Ready`` carries only new work.
The persistence contract is in ``raftkv/core/README.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from raftkv.core.coalesce import coalesce
from raftkv.core.config import Config
from raftkv.core.raft import Raft
from raftkv.core.storage import Storage
from raftkv.core.tracker import PeerStatus
from raftkv.core.types import (
    FORWARDED_REQUESTS,
    LOCAL_MESSAGES,
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ProposalDropped,
    RandomSource,
    Ready,
    Role,
    SoftState,
)

__all__ = ["Config", "RawNode", "Status", "bootstrap_entries"]


@dataclass(frozen=True)
class Status:
    id: int
    hard_state: HardState
    soft_state: SoftState
    applied: int
    conf_state: ConfState
    #: Per-peer replication progress; only filled on the leader.
    progress: dict[int, PeerStatus] = field(default_factory=dict)
    lead_transferee: int = NONE


class RawNode:
    def __init__(self, config: Config, storage: Storage, rng: RandomSource) -> None:
        self.raft = Raft(config, storage, rng)
        self._prev_soft = self.raft.soft_state()
        self._prev_hard = self.raft.hard_state()
        self._outstanding: Ready | None = None

    # -- inputs -----------------------------------------------------------------------------------------

    def tick(self) -> None:
        self.raft.tick()

    def campaign(self) -> None:
        self.raft.step(Message(MessageType.HUP))

    def propose(self, data: bytes) -> None:
        self.propose_batch((data,))

    def propose_batch(self, batch: Sequence[bytes]) -> None:
        """Propose several entries as one message: all are appended, or none (``ProposalDropped``).

        A driver that queues proposals while it persists should hand them over together: the leader then
        appends them in one go and sends each follower one append carrying all of them, instead of one
        append per proposal per follower."""
        assert batch, "empty proposal batch"
        entries = tuple(Entry(term=0, index=0, data=data) for data in batch)
        self.raft.step(Message(MessageType.PROPOSE, entries=entries))

    def propose_conf_change(self, cc: ConfChange) -> None:
        entry = Entry(term=0, index=0, type=EntryType.CONF_CHANGE, data=cc.encode())
        self.raft.step(Message(MessageType.PROPOSE, entries=(entry,)))

    def step(self, msg: Message) -> None:
        """A message from a peer. Local-only types are rejected; a refused forwarded request is dropped (the
        member that asked never hears: its client times out and retries), as etcd's raft drops it."""
        if msg.type in LOCAL_MESSAGES:
            raise ValueError(f"{msg.type.name} is local and cannot arrive from the network")
        try:
            self.raft.step(msg)
        except ProposalDropped:
            if msg.type not in FORWARDED_REQUESTS:
                raise

    def read_index(self, ctx: bytes) -> None:
        if not ctx:
            raise ValueError("read_index needs a non-empty request context")
        self.raft.step(Message(MessageType.READ_INDEX, context=ctx))

    def transfer_leader(self, transferee: int) -> None:
        self.raft.step(Message(MessageType.TRANSFER_LEADER, sender=transferee))

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        return self.raft.apply_conf_change(cc)

    def report_unreachable(self, node_id: int) -> None:
        self.raft.step(Message(MessageType.UNREACHABLE, sender=node_id))

    def report_peer_gone(self, node_id: int) -> None:
        """The driver saw ``node_id``'s process end: the stream to it broke and an immediate reconnect was
        refused (the port is closed), which a partition or a paused process never causes. A follower of that
        leader forgets it and campaigns early (``raftkv/core/failover.py``); anyone else ignores it."""
        self.raft.step(Message(MessageType.PEER_GONE, sender=node_id))

    def commit_notice_pending(self) -> bool:
        """Whether this leader owes a follower the commit index (``Config.defer_commit_notice``): the
        driver then calls ``notify_commit`` soon, unless an append that carries it goes out first."""
        return self.raft.role == Role.LEADER and self.raft.commit_notice_pending()

    def notify_commit(self) -> None:
        """Tell every follower owed it the commit index now (nothing unless this node leads)."""
        self.raft.step(Message(MessageType.NOTIFY_COMMIT))

    def report_snapshot(self, node_id: int, ok: bool) -> None:
        self.raft.step(Message(MessageType.SNAP_STATUS, sender=node_id, reject=not ok))

    # -- the Ready loop ---------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        r = self.raft
        return bool(
            r.soft_state() != self._prev_soft
            or r.hard_state() != self._prev_hard
            or r.log.unstable.entries
            or r.log.unstable.snapshot is not None
            or r.msgs
            or r.read_states
            or r.log.has_next_committed_entries()
        )

    def ready(self) -> Ready:
        """Collect the work accumulated since the last Ready. Each Ready must be ``advance``d before the next."""
        assert self._outstanding is None, "ready() called again before advance()"
        r = self.raft
        rd = Ready()
        soft, hard = r.soft_state(), r.hard_state()
        if soft != self._prev_soft:
            rd.soft_state = soft
        if hard != self._prev_hard:
            rd.hard_state = hard
        rd.entries = list(r.log.unstable.entries)
        rd.snapshot = r.log.unstable.snapshot
        rd.committed_entries = r.log.next_committed_entries(r.cfg.max_committed_size_per_ready)
        rd.messages, r.msgs = coalesce(r.msgs, r.cfg.max_entries_per_msg, r.cfg.max_size_per_msg), []
        rd.read_states, r.read_states = r.read_states, []
        vote_changed = (hard.term, hard.vote) != (self._prev_hard.term, self._prev_hard.vote)
        rd.must_sync = bool(rd.entries) or rd.snapshot is not None or vote_changed
        rd.send_first = r.role == Role.LEADER and rd.snapshot is None and not vote_changed
        assert hard.commit >= self._prev_hard.commit, "commit index went back"
        assert hard.term >= self._prev_hard.term, "term went back"
        self._prev_soft, self._prev_hard = soft, hard
        if rd.committed_entries:
            r.log.accept_applying(rd.committed_entries[-1].index)
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready, *, applied: bool = True) -> None:
        """The driver persisted and sent ``rd`` and, unless ``applied=False``, applied its committed entries.

        A driver that applies in the background passes ``applied=False`` and reports progress with
        ``applied_to`` as each apply completes: the core then keeps refusing a new conf change (and a
        campaign over an unapplied one) until the state machine has really caught up."""
        assert rd is self._outstanding, "advance() must be given the Ready returned by the last ready()"
        log = self.raft.log
        if rd.snapshot is not None:
            log.unstable.stable_snapshot_to(rd.snapshot.index)
            log.applied_to(max(log.applied, rd.snapshot.index))
        if rd.entries:
            log.stable_to(rd.entries[-1].index, rd.entries[-1].term)
            self.raft.persisted_to(rd.entries[-1].index, rd.entries[-1].term)
        if rd.committed_entries:
            if applied:
                log.applied_to(rd.committed_entries[-1].index)
            self.raft.reduce_uncommitted_size(rd.committed_entries)
        self._outstanding = None

    def applied_to(self, index: int) -> None:
        """The state machine has applied everything up to ``index`` (entries handed out with ``advance(rd,
        applied=False)``). May be called between ``ready`` and ``advance``; an index an installed snapshot
        already covers is ignored."""
        log = self.raft.log
        assert index <= log.applying, f"applied {index} was never handed out (applying {log.applying})"
        if index > log.applied:
            log.applied_to(index)

    def leads_in(self, term: int) -> bool:
        """Whether this node is the leader, in ``term``, as of the last input it took."""
        return self.raft.role == Role.LEADER and self.raft.term == term

    def lease_read_index(self, term: int) -> int | None:
        """The index a leader of ``term`` holding a leader lease may serve reads from with no ReadIndex
        round, or None when it may not (not that leader, no entry of its term committed yet, transferring).
        The lease itself needs a clock, so it is the driver's: the core only says what a lease may serve."""
        if not self.leads_in(term):
            return None
        return self.raft.lease_read_index()

    def leader_term(self) -> int:
        """The term this node leads in, or 0 when it does not lead."""
        return self.raft.term if self.raft.role == Role.LEADER else 0

    def status(self) -> Status:
        r = self.raft
        progress = {}
        if r.role == Role.LEADER:
            progress = {peer: PeerStatus.of(pr) for peer, pr in sorted(r.progress.items())}
        return Status(
            id=r.id,
            hard_state=r.hard_state(),
            soft_state=r.soft_state(),
            applied=r.log.applied,
            conf_state=r.conf,
            progress=progress,
            lead_transferee=r.lead_transferee,
        )


def bootstrap_entries(members: Sequence[tuple[int, bytes]]) -> list[Entry]:
    """The initial log of a new cluster: one ADD_VOTER entry per member, at term 1, indices 1..N."""
    return [
        Entry(
            term=1,
            index=i + 1,
            type=EntryType.CONF_CHANGE,
            data=ConfChange(ConfChangeType.ADD_VOTER, node_id, context).encode(),
        )
        for i, (node_id, context) in enumerate(members)
    ]
