"""The leader's side of Raft: replicating to each follower, committing, ReadIndex, leader transfer.

``Raft`` (``raft.py``) inherits these; they are kept apart because they are what a leader does with its
followers — flow-controlled appends and snapshots, heartbeats, counting acknowledgements into the commit
index, confirming leadership for reads, handing leadership over — while ``raft.py`` holds the roles,
elections and the ``step`` switch. The attributes below are ``Raft``'s, declared here for the type checker.
"""

from __future__ import annotations

import dataclasses

from raftkv.core import quorum
from raftkv.core.config import Config
from raftkv.core.log import RaftLog
from raftkv.core.quorum import VoteResult
from raftkv.core.read_only import ReadOnly
from raftkv.core.tracker import Progress, ProgressState
from raftkv.core.types import (
    NONE,
    CompactedError,
    ConfState,
    Entry,
    Message,
    MessageType,
    ReadState,
)

MT = MessageType

_VOTE_TYPES = frozenset({MT.VOTE, MT.PRE_VOTE, MT.VOTE_RESP, MT.PRE_VOTE_RESP})


class Leading:
    id: int
    cfg: Config
    term: int
    log: RaftLog
    conf: ConfState
    progress: dict[int, Progress]
    msgs: list[Message]
    read_states: list[ReadState]
    read_only: ReadOnly
    pending_read_index: list[Message]
    election_elapsed: int
    lead_transferee: int
    transfer_term: int

    def _info(self, text: str) -> None:
        if self.cfg.logger is not None:
            self.cfg.logger(f"{self.id} {text}")

    def _send(self, m: Message) -> None:
        """Queue ``m``; fills in our id and, except for vote traffic and forwarded requests, our term."""
        term = m.term
        if m.type in _VOTE_TYPES:
            assert term != 0, f"{m.type.name} must carry an explicit term"
        else:
            assert term == 0, f"{m.type.name} must not set its own term"
            if m.type not in (MT.PROPOSE, MT.READ_INDEX):
                term = self.term
        sender = self.id if m.sender == NONE else m.sender
        if term != m.term or sender != m.sender:  # one copy, not one per field: every message sent passes here
            m = dataclasses.replace(m, term=term, sender=sender)
        self.msgs.append(m)

    def _send_append(self, to: int, send_if_empty: bool = True) -> bool:
        """Send ``to`` the entries it is missing (or a snapshot if they were compacted). Returns whether sent."""
        pr = self.progress[to]
        if pr.is_paused():
            return False
        prev = pr.next - 1
        try:
            prev_term = self.log.term(prev)
            entries: list[Entry] = []
            if pr.state != ProgressState.REPLICATE or not pr.inflights.full():
                entries = self.log.entries(pr.next, self.cfg.max_size_per_msg, self.cfg.max_entries_per_msg)
        except CompactedError:
            return self._send_snapshot(to, pr)
        if not entries and not send_if_empty:
            return False
        self._send(
            Message(MT.APP, to=to, index=prev, log_term=prev_term, entries=tuple(entries), commit=self.log.committed)
        )
        pr.sent_entries(len(entries), sum(e.size() for e in entries))
        pr.sent_commit = max(pr.sent_commit, self.log.committed)
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            self._info(f"ignores sending snapshot to {to}: not recently active")
            return False
        meta = self.log.storage.snapshot_meta()
        assert meta.index > 0, "entries were compacted but storage has no snapshot"
        pr.become_snapshot(meta.index)
        self._info(f"sends snapshot {meta.index}/{meta.term} to {to}; progress {pr.match}/{pr.next}")
        self._send(Message(MT.SNAP, to=to, snapshot=meta))
        return True

    def _send_heartbeat(self, to: int, ctx: bytes) -> None:
        # Never tell a follower to commit past what it is known to hold: its log may still diverge beyond match.
        pr = self.progress[to]
        commit = min(pr.match, self.log.committed)
        pr.sent_commit = max(pr.sent_commit, commit)
        self._send(Message(MT.HEARTBEAT, to=to, commit=commit, context=ctx))

    def _peers(self) -> list[int]:
        return sorted(p for p in self.progress if p != self.id)

    def bcast_append(self) -> None:
        for peer in self._peers():
            self._send_append(peer)

    def _owes_commit(self, pr: Progress) -> bool:
        return pr.can_bump_commit(self.log.committed) and not pr.is_paused()

    def commit_notice_pending(self) -> bool:
        """Whether a follower that could take an append has not been sent the current commit index
        (only ever true with ``defer_commit_notice``: otherwise it is sent as soon as it advances)."""
        return any(self._owes_commit(pr) for peer, pr in self.progress.items() if peer != self.id)

    def notify_commit(self) -> None:
        """Send the commit index to each follower that has not been sent it, with whatever entries it is
        missing (an empty append when none): what etcd-io/raft does at once when the commit index moves, done
        here when the driver says so (``defer_commit_notice``)."""
        for peer in self._peers():
            if self._owes_commit(self.progress[peer]):
                self._send_append(peer)

    def bcast_heartbeat(self, ctx: bytes | None = None) -> None:
        if ctx is None:
            ctx = self.read_only.last_pending_context()
        for peer in self._peers():
            self._send_heartbeat(peer, ctx)

    def _committed_entry_in_current_term(self) -> bool:
        return self.log.term_or_zero(self.log.committed) == self.term

    def _maybe_commit(self) -> bool:
        """Advance commit to what a quorum holds — only if that entry is of our term (Raft §5.4.2)."""
        mci = quorum.committed_index(self.conf.voters, {p: pr.match for p, pr in self.progress.items()})
        if "commit_prior_term" in self.cfg.unsafe_bugs and mci > self.log.committed:
            self.log.commit_to(mci)  # planted bug: counts replicas of earlier-term entries
            committed = True
        else:
            committed = self.log.maybe_commit(mci, self.term)
        if committed and self._committed_entry_in_current_term() and self.pending_read_index:
            pending, self.pending_read_index = self.pending_read_index, []
            for req in pending:
                self._send_read_index(req)
        return committed

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decrease_to(m.index, next_probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.sender)
            return
        if not (pr.maybe_update(m.index) or (pr.match == m.index and pr.state == ProgressState.PROBE)):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match + 1 >= self.log.first_index():
            # The follower caught up through the snapshot (or the log) and can be fed entries again.
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if self._maybe_commit():
            if not self.cfg.defer_commit_notice:
                self.bcast_append()
        elif m.sender != self.id and pr.can_bump_commit(self.log.committed) and not self.cfg.defer_commit_notice:
            self._send_append(m.sender)
        while self._send_append(m.sender, send_if_empty=False):
            pass
        if m.sender == self.lead_transferee and pr.match == self.log.last_index():
            self._info(f"sends TIMEOUT_NOW to {m.sender}: its log is up to date")
            self._send(Message(MT.TIMEOUT_NOW, to=m.sender))

    def _handle_heartbeat_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        pr.msg_app_flow_paused = False
        if pr.match < self.log.last_index():
            self._send_append(m.sender)
        if not m.context:
            return
        acks = self.read_only.recv_ack(m.sender, m.context)
        if acks is None or quorum.vote_result(self.conf.voters, acks) != VoteResult.WON:
            return
        for status in self.read_only.advance(m.context):
            self._respond_read(status.request, status.index)

    def _handle_read_index(self, m: Message) -> None:
        if self.conf.voters == {self.id}:
            self._respond_read(m, self.log.committed)
        elif not self._committed_entry_in_current_term():
            # Our commit index may lag the previous leader's until an entry of our term commits (thesis §6.4).
            self.pending_read_index.append(m)
        else:
            self._send_read_index(m)

    def lease_read_index(self) -> int | None:
        """The index a read may be served from without a ReadIndex round, if the caller holds a leader lease
        (``raftkv/server/node/read_lease.py`` decides that, with a clock): the commit index, once an entry
        of our term is committed (before that it may lag the previous leader's, thesis §6.4). None for the
        rest of a term in which a leadership transfer started: TIMEOUT_NOW lets the transferee win at once,
        lease or not, and it may reach the transferee after the transfer was given up here."""
        if self.transfer_term == self.term or not self._committed_entry_in_current_term():
            return None
        return self.log.committed

    def _send_read_index(self, m: Message) -> None:
        self.read_only.add_request(self.log.committed, m)
        self.read_only.recv_ack(self.id, m.context)
        self.bcast_heartbeat(m.context)

    def _respond_read(self, req: Message, index: int) -> None:
        if req.sender in (NONE, self.id):
            self.read_states.append(ReadState(index, req.context))
        else:
            self._send(Message(MT.READ_INDEX_RESP, to=req.sender, index=index, context=req.context))

    def _handle_transfer_leader(self, transferee: int, pr: Progress) -> None:
        if pr.is_learner:
            self._info(f"ignores transfer to learner {transferee}")
            return
        if self.lead_transferee != NONE:
            if self.lead_transferee == transferee:
                self._info(f"transfer to {transferee} already in progress")
                return
            self.abort_leader_transfer()
        if transferee == self.id:
            self._info("is already leader; transfer ignored")
            return
        self._info(f"starts transferring leadership to {transferee}")
        # The transfer must finish within an election timeout, or it is aborted (tick_heartbeat).
        self.election_elapsed = 0
        self.lead_transferee = transferee
        self.transfer_term = self.term
        if pr.match == self.log.last_index():
            self._send(Message(MT.TIMEOUT_NOW, to=transferee))
        else:
            self._send_append(transferee)

    def abort_leader_transfer(self) -> None:
        if self.lead_transferee != NONE:
            self._info(f"aborts leadership transfer to {self.lead_transferee}")
        self.lead_transferee = NONE
