"""The Raft state machine: one ``step`` switch over messages, and named role transitions.

Everything is an input message (ticks become HUP/BEAT/CHECK_QUORUM, proposals PROPOSE, ...), handled
synchronously; outputs accumulate in ``msgs``, ``read_states`` and the log's unstable tail, which
``RawNode`` packages into a ``Ready``. The algorithm follows the Raft paper and thesis with the refinements
of etcd-io/raft: pre-vote, check-quorum with leader lease, per-follower flow control, fast log
backtracking, ReadIndex, leader transfer and one-at-a-time membership changes. The leader's side of replication,
committing, ReadIndex and transfer is in ``leading.py`` (``Raft`` inherits it). One addition: a follower told
that its leader's process is gone (``PEER_GONE``) forgets it and campaigns early (``failover.py``).
"""

from __future__ import annotations

import dataclasses
import enum

from raftkv.core import confchange, failover, quorum
from raftkv.core.config import Config
from raftkv.core.leading import MT, Leading
from raftkv.core.log import RaftLog
from raftkv.core.quorum import VoteResult
from raftkv.core.read_only import ReadOnly
from raftkv.core.storage import Storage
from raftkv.core.tracker import Inflights, Progress, ProgressState
from raftkv.core.types import (
    NONE,
    ConfChange,
    ConfState,
    DropReason,
    Entry,
    EntryType,
    HardState,
    Message,
    ProposalDropped,
    RandomSource,
    ReadState,
    Role,
    SoftState,
)

#: VOTE/PRE_VOTE context marking an election started by a leader transfer: it may disrupt a live leader.
CAMPAIGN_TRANSFER = b"transfer"

_VOTE_TYPES = frozenset({MT.VOTE, MT.PRE_VOTE, MT.VOTE_RESP, MT.PRE_VOTE_RESP})


class _Campaign(enum.Enum):
    PRE_ELECTION = 0
    ELECTION = 1
    TRANSFER = 2


class Raft(Leading):
    """One node's Raft state. Driven only through ``step``/``tick``/``apply_conf_change`` (via ``RawNode``)."""

    def __init__(self, config: Config, storage: Storage, rng: RandomSource) -> None:
        self.id = config.id
        self.cfg = config
        self._rng = rng
        hs, cs = storage.initial_state()
        assert config.applied <= hs.commit or hs.commit == 0 and config.applied == 0, (
            f"applied {config.applied} is beyond the persisted commit {hs.commit}"
        )
        self.log = RaftLog(storage, hs.commit, config.applied)
        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.role = Role.FOLLOWER
        self.conf = ConfState()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.read_only = ReadOnly()
        self.pending_read_index: list[Message] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_tick
        self.lead_transferee = NONE
        #: The last term in which this node, leading, started a leadership transfer (0: never).
        self.transfer_term = 0
        #: With ``Config.refuse_votes_after_boot``: until an election timeout has passed since boot, votes
        #: are refused as if a leader had just been heard (see ``step``).
        self.boot_lease = config.refuse_votes_after_boot
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        #: A pre-vote started because the leader's process is gone: re-ask the silent voters every tick.
        self.early_campaign = False
        #: Pre-votes ignored under the leader lease since we last heard the leader; answered if it is gone.
        self.ignored_pre_votes: dict[int, Message] = {}
        self._set_conf(cs)
        self.become_follower(hs.term, NONE)
        self.vote = hs.vote

    # -- observation ------------------------------------------------------------------------------------

    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.role)

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def promotable(self) -> bool:
        """Only a voter that is not in the middle of installing a snapshot may campaign."""
        return self.id in self.conf.voters and self.log.unstable.snapshot is None

    # -- role transitions (sending, replication, commit, reads, transfer: leading.py) -----------------

    def _reset(self, term: int) -> None:
        assert term >= self.term, f"term went back from {self.term} to {term}"
        if term != self.term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        e = self.cfg.election_tick
        self.randomized_election_timeout = self._rng.randrange(e, 2 * e)
        assert e <= self.randomized_election_timeout < 2 * e, "random source out of range"
        self.abort_leader_transfer()
        self.votes = {}
        last = self.log.last_index()
        for peer, pr in self.progress.items():
            self.progress[peer] = self._new_progress(last if peer == self.id else 0, last + 1, pr.is_learner)
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.read_only = ReadOnly()
        self.pending_read_index = []
        self.early_campaign = False
        self.ignored_pre_votes = {}

    def _new_progress(self, match: int, next_index: int, is_learner: bool) -> Progress:
        return Progress(
            match=match,
            next=next_index,
            inflights=Inflights(self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes),
            is_learner=is_learner,
        )

    def become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.lead = lead
        self._info(f"became follower at term {self.term}")

    def become_pre_candidate(self) -> None:
        """Pre-vote: ask whether we could win before disturbing anyone's term (thesis §9.6)."""
        assert self.role != Role.LEADER, "leader cannot become pre-candidate"
        self.role = Role.PRE_CANDIDATE
        self.votes = {}
        self.lead = NONE
        self.early_campaign = False
        self._info(f"became pre-candidate at term {self.term}")

    def become_candidate(self) -> None:
        assert self.role != Role.LEADER, "leader cannot become candidate"
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self._info(f"became candidate at term {self.term}")

    def become_leader(self) -> None:
        assert self.role != Role.FOLLOWER, "follower cannot become leader directly"
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        me = self.progress[self.id]
        me.become_replicate()
        me.recent_active = True
        # Entries of earlier terms may hide an unapplied conf change: none may be proposed before those apply.
        self.pending_conf_index = self.log.last_index()
        # Commit an entry of our own term; only then are earlier-term entries committed (Raft §5.4.2).
        appended = self._append_entries([Entry(term=0, index=0)])
        assert appended, "the empty leader entry cannot be refused"
        self._info(f"became leader at term {self.term}")
        self.bcast_append()

    # -- elections --------------------------------------------------------------------------------------

    def _hup(self, kind: _Campaign) -> None:
        if self.role == Role.LEADER:
            self._info("ignoring HUP: already leader")
            return
        if not self.promotable():
            self._info("is unpromotable; campaign refused")
            return
        if any(e.type == EntryType.CONF_CHANGE for e in self.log.slice(self.log.applied + 1, self.log.committed + 1)):
            self._info(f"cannot campaign at term {self.term}: pending configuration changes to apply")
            return
        if kind == _Campaign.ELECTION and self.cfg.pre_vote:
            kind = _Campaign.PRE_ELECTION
        self._campaign(kind)

    def _campaign(self, kind: _Campaign) -> None:
        if kind == _Campaign.PRE_ELECTION:
            self.become_pre_candidate()
            vote_type, term = MT.PRE_VOTE, self.term + 1
        else:
            self.become_candidate()
            vote_type, term = MT.VOTE, self.term
        if self._poll(self.id, True) == VoteResult.WON:
            self._on_election_won()
            return
        ctx = CAMPAIGN_TRANSFER if kind == _Campaign.TRANSFER else b""
        self._request_votes(vote_type, term, sorted(self.conf.voters - {self.id}), ctx)

    def _request_votes(self, vote_type: MT, term: int, peers: list[int], ctx: bytes = b"") -> None:
        last = self.log.last_index()
        last_term = self.log.last_term()
        for peer in peers:
            self._send(Message(vote_type, to=peer, term=term, index=last, log_term=last_term, context=ctx))

    def _poll(self, node: int, granted: bool) -> VoteResult:
        self.votes.setdefault(node, granted)
        return quorum.vote_result(self.conf.voters, self.votes)

    def _on_election_won(self) -> None:
        if self.role == Role.PRE_CANDIDATE:
            self._campaign(_Campaign.ELECTION)
        else:
            self.become_leader()

    def _handle_vote_request(self, m: Message) -> None:
        resp = MT.VOTE_RESP if m.type == MT.VOTE else MT.PRE_VOTE_RESP
        can_vote = (
            self.vote == m.sender
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == MT.PRE_VOTE and m.term > self.term)
        )
        if "double_vote" in self.cfg.unsafe_bugs and m.type == MT.VOTE:
            can_vote = True  # planted bug: forgets the vote already cast this term
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self._send(Message(resp, to=m.sender, term=m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.sender
            return
        self._send(Message(resp, to=m.sender, term=self.term, reject=True))

    # -- the step switch --------------------------------------------------------------------------------

    def step(self, m: Message) -> None:
        """Process one message. Raises ProposalDropped for a proposal/read that cannot be accepted."""
        if m.term > self.term and m.term != 0:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                heard_lately = self.election_elapsed < self.cfg.election_tick
                in_lease = self.cfg.check_quorum and (self.lead != NONE or self.boot_lease) and heard_lately
                if in_lease and not force:
                    # Leader lease: we heard from a live leader within the minimum election timeout, so this
                    # candidate is probably partitioned or restarted; don't let it disrupt the cluster.
                    self._info(f"ignores {m.type.name} from {m.sender} at term {m.term}: lease not expired")
                    if m.type == MT.PRE_VOTE:
                        self.ignored_pre_votes[m.sender] = m
                    return
            if m.type == MT.PRE_VOTE or (m.type == MT.PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes never change our term; a granted pre-vote carries the future term
            else:
                self._info(f"received {m.type.name} with higher term {m.term} from {m.sender}")
                self.become_follower(m.term, m.sender if m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP) else NONE)
        elif 0 < m.term < self.term:
            if (self.cfg.check_quorum or self.cfg.pre_vote) and m.type in (MT.HEARTBEAT, MT.APP):
                # A stale leader (e.g. after a partition) learns our term from this answer and steps down;
                # with pre-vote/check-quorum it could otherwise never learn it.
                self._send(Message(MT.APP_RESP, to=m.sender))
            elif m.type == MT.PRE_VOTE:
                self._send(Message(MT.PRE_VOTE_RESP, to=m.sender, term=self.term, reject=True))
            return

        if m.type == MT.HUP:
            self._hup(_Campaign.ELECTION)
        elif m.type == MT.PEER_GONE:
            self._handle_peer_gone(m.sender)
        elif m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role == Role.LEADER:
            self._step_leader(m)
        elif self.role == Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _step_leader(self, m: Message) -> None:
        if m.type == MT.BEAT:
            self.bcast_heartbeat()
            return
        if m.type == MT.CHECK_QUORUM:
            self._check_quorum()
            return
        if m.type == MT.NOTIFY_COMMIT:
            self.notify_commit()
            return
        if m.type == MT.PROPOSE:
            self._handle_propose(m)
            return
        if m.type == MT.READ_INDEX:
            self._handle_read_index(m)
            return
        pr = self.progress.get(m.sender)
        if pr is None:
            self._info(f"no progress available for {m.sender}; ignoring {m.type.name}")
            return
        if m.type == MT.APP_RESP:
            self._handle_append_response(m, pr)
        elif m.type == MT.HEARTBEAT_RESP:
            self._handle_heartbeat_response(m, pr)
        elif m.type == MT.SNAP_STATUS:
            if pr.state != ProgressState.SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            self._info(f"snapshot to {m.sender} {'failed' if m.reject else 'sent'}; probing from {pr.match}")
            pr.become_probe()
            # Wait for the follower's answer (or a heartbeat response) before probing again.
            pr.msg_app_flow_paused = True
        elif m.type == MT.UNREACHABLE:
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()
        elif m.type == MT.TRANSFER_LEADER:
            self._handle_transfer_leader(m.sender, pr)

    def _step_candidate(self, m: Message) -> None:
        own_resp = MT.PRE_VOTE_RESP if self.role == Role.PRE_CANDIDATE else MT.VOTE_RESP
        if m.type in (MT.PROPOSE, MT.READ_INDEX):
            raise ProposalDropped(DropReason.NO_LEADER)
        if m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
            self.become_follower(m.term, m.sender)
            self._step_follower(m)
        elif m.type == own_resp:
            result = self._poll(m.sender, not m.reject)
            if result == VoteResult.WON:
                self._on_election_won()
            elif result == VoteResult.LOST:
                self._info(f"lost the election at term {self.term}")
                self.become_follower(self.term, NONE)

    def _step_follower(self, m: Message) -> None:
        if m.type in (MT.PROPOSE, MT.READ_INDEX, MT.TRANSFER_LEADER):
            if self.lead == NONE:
                if m.type == MT.TRANSFER_LEADER:
                    self._info("no leader; dropping leader transfer")
                    return
                raise ProposalDropped(DropReason.NO_LEADER)
            self._send(dataclasses.replace(m, to=self.lead, term=0))
        elif m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
            self.election_elapsed = 0
            self.lead = m.sender
            if self.ignored_pre_votes:
                self.ignored_pre_votes = {}  # the lease was right to refuse them
            if m.type == MT.APP:
                self._handle_append_entries(m)
            elif m.type == MT.HEARTBEAT:
                self.log.commit_to(m.commit)
                self._send(Message(MT.HEARTBEAT_RESP, to=m.sender, context=m.context))
            else:
                self._handle_snapshot(m)
        elif m.type == MT.TIMEOUT_NOW:
            self._info(f"received TIMEOUT_NOW from {m.sender}; campaigning at once")
            self._hup(_Campaign.TRANSFER)
        elif m.type == MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))

    # -- follower handlers ------------------------------------------------------------------------------

    def _handle_peer_gone(self, gone: int) -> None:
        """The driver saw ``gone``'s process end. If it is our leader, its lease ends here: forget it (we
        then grant pre-votes at once) and campaign early, in the turn ``failover`` gives us.

        Safe whatever the report's truth: a pre-vote changes no term, and every voter that still hears a
        live leader (the leader included) ignores it, so a false report to a minority costs nothing and the
        next heartbeat makes us follow again. Without pre-vote and check-quorum that would not hold (an
        early election would raise the term, or be granted despite a live leader), so then we only forget."""
        if self.role != Role.FOLLOWER or self.lead != gone:
            self._info(f"ignores that {gone} is gone: not its leader")
            return
        self._info(f"forgets leader {gone} at term {self.term}: its process is gone")
        self.lead = NONE
        # A follower told a moment earlier may have asked already; only the lease stopped us answering.
        held, self.ignored_pre_votes = self.ignored_pre_votes, {}
        for sender in sorted(held):
            self._info(f"answers the PRE_VOTE from {sender} it ignored under {gone}'s lease")
            self.step(held[sender])
        if "gone_skips_pre_vote" in self.cfg.unsafe_bugs and self.promotable():
            self._campaign(_Campaign.ELECTION)  # planted bug: a real election at once, whoever still hears the leader
            return
        if not (self.cfg.pre_vote and self.cfg.check_quorum and self.promotable()):
            return
        delay = failover.campaign_delay(self.id, self.conf.voters, gone)
        if delay == 0:
            self._hup(_Campaign.ELECTION)
            # mypy keeps the narrowing to FOLLOWER from above across _hup, which changes the role
            self.early_campaign = self.role == Role.PRE_CANDIDATE  # type: ignore[comparison-overlap]
            return
        # Fire in ``delay`` ticks unless a leader or a vote resets the timer first (both set elapsed to 0).
        self.election_elapsed = max(self.election_elapsed, self.randomized_election_timeout - delay)
        self._info(f"campaigns in {delay} ticks unless it hears a leader")

    def _handle_append_entries(self, m: Message) -> None:
        if m.index < self.log.committed:
            # Stale or reordered: everything up to commit is already settled here.
            self._send(Message(MT.APP_RESP, to=m.sender, index=self.log.committed))
            return
        last = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last is not None:
            self._send(Message(MT.APP_RESP, to=m.sender, index=last))
            return
        # Reject with a hint: the largest index <= the probe whose term is <= the leader's term there. The leader
        # does the same search on its own log, so a whole divergent term is skipped per round trip.
        hint, hint_term = self.log.find_conflict_by_term(min(m.index, self.log.last_index()), m.log_term)
        self._info(
            f"rejects APP at {m.log_term}/{m.index} from {m.sender}: hint {hint_term}/{hint}"
        )
        self._send(Message(MT.APP_RESP, to=m.sender, index=m.index, reject=True, reject_hint=hint, log_term=hint_term))

    def _handle_snapshot(self, m: Message) -> None:
        assert m.snapshot is not None, "SNAP without snapshot metadata"
        if self._restore(m):
            self._info(f"restored snapshot {m.snapshot.index}/{m.snapshot.term}")
            self._send(Message(MT.APP_RESP, to=m.sender, index=self.log.last_index()))
        else:
            self._send(Message(MT.APP_RESP, to=m.sender, index=self.log.committed))

    def _restore(self, m: Message) -> bool:
        s = m.snapshot
        assert s is not None
        if s.index <= self.log.committed:
            return False
        if self.id not in s.conf_state.members():
            self._info(f"ignores snapshot {s.index}: not a member of {sorted(s.conf_state.members())}")
            return False
        if self.log.match_term(s.index, s.term):
            # Our log already has the snapshot's last entry: just learn that it is committed.
            self.log.commit_to(s.index)
            return False
        self.log.restore(s)
        self._set_conf(s.conf_state)
        return True

    # -- leader handlers --------------------------------------------------------------------------------

    def _check_quorum(self) -> None:
        active = {peer: True for peer, pr in self.progress.items() if pr.recent_active or peer == self.id}
        if quorum.vote_result(self.conf.voters, active) != VoteResult.WON:
            self._info("stepped down: no quorum heard within an election timeout")
            self.become_follower(self.term, NONE)
            return
        for peer, pr in self.progress.items():
            pr.recent_active = peer == self.id

    def _handle_propose(self, m: Message) -> None:
        assert m.entries, "empty proposal"
        if self.id not in self.progress:
            raise ProposalDropped(DropReason.NOT_MEMBER)
        if self.lead_transferee != NONE:
            raise ProposalDropped(DropReason.TRANSFERRING)
        for e in m.entries:
            if e.type == EntryType.CONF_CHANGE:
                reason = self._conf_change_refusal(ConfChange.decode(e.data))
                if reason is not None:
                    self._info(f"refuses conf change: {reason}")
                    raise ProposalDropped(DropReason.CONF_CHANGE_REFUSED, reason)
        if not self._append_entries(list(m.entries)):
            raise ProposalDropped(DropReason.UNCOMMITTED_LIMIT)
        if any(e.type == EntryType.CONF_CHANGE for e in m.entries):
            self.pending_conf_index = self.log.last_index()
        self.bcast_append()

    def _conf_change_refusal(self, cc: ConfChange) -> str | None:
        if self.pending_conf_index > self.log.applied:
            return f"possible unapplied conf change at index {self.pending_conf_index} (applied {self.log.applied})"
        if not self._committed_entry_in_current_term():
            return "leader has not committed an entry in its term"
        return confchange.validate(self.conf, cc)

    def _append_entries(self, entries: list[Entry]) -> bool:
        """Append proposals at our term; False (nothing appended) when over the uncommitted-bytes bound."""
        size = sum(len(e.data) for e in entries)
        if self.uncommitted_size > 0 and size > 0 and self.uncommitted_size + size > self.cfg.max_uncommitted_bytes:
            return False
        self.uncommitted_size += size
        first = self.log.last_index() + 1
        stamped = [Entry(self.term, first + i, e.type, e.data) for i, e in enumerate(entries)]
        self.log.append(stamped)
        # The leader counts itself only once these entries are durable here (``persisted_to``): its APPs may
        # leave before its own write completes (``Ready.send_first``, Raft thesis §10.2.1).
        return True

    def persisted_to(self, index: int, term: int) -> None:
        """The driver made this node's log durable up to ``index`` (an entry of ``term``). A leader counts its
        own copy towards commit only now; a commit that this completes is sent on at once, as an
        acknowledgement from a follower would be."""
        if self.role != Role.LEADER or self.id not in self.progress or not self.log.match_term(index, term):
            return
        if self.progress[self.id].maybe_update(index) and self._maybe_commit():
            self.bcast_append()

    def reduce_uncommitted_size(self, entries: list[Entry]) -> None:
        self.uncommitted_size = max(0, self.uncommitted_size - sum(len(e.data) for e in entries))


    # -- ticks ------------------------------------------------------------------------------------------

    def tick(self) -> None:
        if self.role == Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.boot_lease = False
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.step(Message(MT.HUP))
        elif self.early_campaign and self.role == Role.PRE_CANDIDATE:
            # A voter that had not yet heard the leader was gone ignored our first request (its lease);
            # pre-votes change nothing, so asking again each tick is free and saves an election timeout.
            silent = sorted(self.conf.voters - set(self.votes))
            self._request_votes(MT.PRE_VOTE, self.term + 1, silent)

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                self.step(Message(MT.CHECK_QUORUM))
            if self.role == Role.LEADER and self.lead_transferee != NONE:
                self.abort_leader_transfer()
        if self.role != Role.LEADER:
            return
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self.step(Message(MT.BEAT))

    # -- membership -------------------------------------------------------------------------------------

    def _set_conf(self, cs: ConfState) -> None:
        self.conf = cs
        # A new peer is probed at our last entry: the first APP carries that entry, and the answer (accept, or
        # reject with a hint) tells us where its log stands.
        next_index = max(self.log.last_index(), 1)
        for node in sorted(cs.members()):
            pr = self.progress.get(node)
            if pr is None:
                pr = self._new_progress(0, next_index, node in cs.learners)
                # A new peer counts as active so that it can be sent a snapshot straight away.
                pr.recent_active = True
                self.progress[node] = pr
            pr.is_learner = node in cs.learners
        for node in [n for n in self.progress if n not in cs.members()]:
            del self.progress[node]

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        before = self.conf
        self._set_conf(confchange.apply(self.conf, cc))
        if self.conf != before:
            self._info(
                f"applied {cc.type.name} {cc.node_id}: voters={sorted(self.conf.voters)} "
                f"learners={sorted(self.conf.learners)}"
            )
        if self.role != Role.LEADER:
            return self.conf
        if self.id not in self.conf.voters:
            self._info("stepping down: no longer a voter")
            self.become_follower(self.term, NONE)
            return self.conf
        if self.lead_transferee != NONE and self.lead_transferee not in self.conf.voters:
            self.abort_leader_transfer()
        # A smaller quorum may already hold newer entries; new peers need their first APP.
        if self._maybe_commit():
            self.bcast_append()
        else:
            for peer in self._peers():
                self._send_append(peer, send_if_empty=False)
        return self.conf
