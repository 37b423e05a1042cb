"""Raft's safety properties, checked on the production node as the simulation runs.

Checked whenever a member sends a message (``sending``) and whenever one of its disk writes completes
(``disk_committed``) — the two moments at which a member's state can change what others believe. Each
check is incremental, so running them after every event keeps a run linear:

- **Election safety**: at most one leader per term.
- **Vote durability**: a member's durable vote never changes within a term; durable term and commit never
  go back.
- **Durability before acknowledgement**: a member only acknowledges entries (APP_RESP) and grants votes
  (VOTE_RESP) that are already durable on its disk — the Ready contract's "send after fsync", judged
  against what would survive a crash right now.
- **Log matching**: an entry (index, term) always has the same content and the same predecessor term, on
  every member and forever (checked as entries become durable).
- **Leader completeness**: an entry committed by the leader of term T is in the log of every leader of a
  later term.
- **State machine safety**: no two members apply different entries at one index; the durable applied index
  never passes the durable commit index (a restart needs applied <= commit).
- **Commit monotonicity**: a member's commit index never decreases within a life, and never restarts below
  its durable commit.

The client-visible properties (linearizable answers, watches, acknowledged writes surviving) are checked in
``history.py`` against what the clients saw.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftkv.core.types import (
    CompactedError,
    EntryType,
    Message,
    MessageType,
    Role,
    UnavailableError,
)
from raftkv.sim.member import SimMember
from raftkv.sim.memdb import Items
from raftkv.storage.raft_log import K_APPLIED, decode_entry, read_u64
from raftkv.storage.sealed import unseal


class InvariantViolation(AssertionError):
    """A safety property failed; the message says which, where and with what evidence."""


@dataclass(frozen=True, slots=True)
class _Logged:
    prev_term: int
    type: EntryType
    data: bytes


class RaftChecker:
    def __init__(self, members: dict[int, SimMember]) -> None:
        self._members = members
        self._leaders: dict[int, int] = {}  # term -> leader id
        self._current_leaders: dict[int, int] = {}  # member id -> term it leads in
        self._logged: dict[tuple[int, int], _Logged] = {}  # (index, term) -> content
        self._applied_terms: dict[int, int] = {}  # index -> term of the entry applied there
        self._committed: dict[int, tuple[int, int]] = {}  # index -> (entry term, term of committing leader)
        self._committed_upto = 0
        self._commit: dict[int, int] = {}  # member id -> commit index seen in the current life
        self._durable: dict[int, tuple[int, int, int]] = {}  # member id -> durable (term, vote, commit)
        self._durable_logs: dict[int, Items] = {}  # member id -> its durable log table last checked
        self._durable_applied: dict[int, int] = {}
        self.elections = 0

    def current_leader(self) -> int | None:
        """The member leading the highest term among those currently leading, if any."""
        if not self._current_leaders:
            return None
        return max(self._current_leaders.items(), key=lambda kv: (kv[1], kv[0]))[0]

    @property
    def max_committed(self) -> int:
        return self._committed_upto

    # -- lifecycle --------------------------------------------------------------------------------------
    def started(self, member: SimMember) -> None:
        """A life begins: its commit may be below the last life's volatile one, never below the durable one."""
        self._commit[member.id] = member.disk.durable_log().initial_state()[0].commit
        self._current_leaders.pop(member.id, None)

    def crashed(self, member: SimMember) -> None:
        self._current_leaders.pop(member.id, None)

    # -- whenever a member sends ---------------------------------------------------------------------------
    def sending(self, member: SimMember, msg: Message) -> None:
        self.observe(member)
        if msg.type not in (MessageType.APP_RESP, MessageType.VOTE_RESP) or msg.reject:
            return
        durable = member.disk.durable_log()
        if msg.type == MessageType.APP_RESP and msg.index > durable.last_index():
            raise InvariantViolation(
                f"{member.name} acknowledged index {msg.index} to {self._name(msg.to)} but only "
                f"{durable.last_index()} is durable"
            )
        if msg.type == MessageType.VOTE_RESP:
            # Safe once no restart can grant another vote in that term: the disk holds this vote, or a later
            # term (two vote requests stepped in one turn are answered after one save, of the later term).
            hs = durable.initial_state()[0]
            if hs.term < msg.term or (hs.term == msg.term and hs.vote != msg.to):
                raise InvariantViolation(
                    f"{member.name} granted its term {msg.term} vote to {self._name(msg.to)} but its disk holds "
                    f"term {hs.term} vote {self._name(hs.vote)}"
                )

    def observe(self, member: SimMember) -> None:
        node = member.node
        if node is None:
            return
        raft = node.loop.raw.raft
        hs = raft.hard_state()
        last = self._commit.get(member.id, 0)
        if hs.commit < last:
            raise InvariantViolation(f"{member.name} commit index went back from {last} to {hs.commit}")
        self._commit[member.id] = hs.commit
        if raft.role != Role.LEADER:
            self._current_leaders.pop(member.id, None)
            return
        term = hs.term
        other = self._leaders.setdefault(term, member.id)
        if other != member.id:
            raise InvariantViolation(f"two leaders in term {term}: {self._name(other)} and {member.name}")
        if self._current_leaders.get(member.id) != term:
            self._current_leaders[member.id] = term
            self.elections += 1
            self._check_completeness(member, term, 1)
        if hs.commit > self._committed_upto:
            self._record_commits(member, term, hs.commit)

    def _record_commits(self, leader: SimMember, term: int, commit: int) -> None:
        assert leader.node is not None
        log = leader.node.store.log
        start = self._committed_upto + 1
        hi = min(commit, log.last_index())
        for i in range(start, hi + 1):
            entry_term = log.term(i) if i >= log.first_index() else self._applied_terms.get(i, 0)
            self._committed[i] = (entry_term, term)
        if hi >= start:
            self._committed_upto = hi
            for lid, lterm in sorted(self._current_leaders.items()):
                if lterm > term:
                    self._check_completeness(self._members[lid], lterm, start)

    def _check_completeness(self, leader: SimMember, term: int, start: int) -> None:
        if leader.node is None:
            return
        log = leader.node.store.log
        first, last = log.first_index(), log.last_index()
        for i in range(max(start, first), self._committed_upto + 1):
            entry_term, commit_term = self._committed[i]
            if commit_term >= term or entry_term == 0:
                continue
            have = log.term(i) if i <= last else None
            if have != entry_term:
                raise InvariantViolation(
                    f"leader completeness: {leader.name} leads term {term} but its log has "
                    f"{'nothing' if have is None else f'term {have}'} at index {i}, committed with term "
                    f"{entry_term} by the leader of term {commit_term}"
                )

    # -- whenever a write of a member's reaches its disk ------------------------------------------------------
    def disk_committed(self, member: SimMember) -> None:
        durable = member.disk.durable_log()
        hs = durable.initial_state()[0]
        term, vote, commit = self._durable.get(member.id, (0, 0, 0))
        if hs.term < term or (hs.term == term and hs.commit < commit):
            raise InvariantViolation(f"{member.name} durable hard state went back: {(term, vote, commit)} -> {hs}")
        if hs.term == term and vote and hs.vote != vote:
            raise InvariantViolation(
                f"{member.name} changed its vote in term {term}: {self._name(vote)} then {self._name(hs.vote)}"
            )
        self._durable[member.id] = (hs.term, hs.vote, hs.commit)
        state = member.disk.durable_state
        log_items = state["log"]
        if log_items is not self._durable_logs.get(member.id):
            self._check_new_entries(member, self._durable_logs.get(member.id, []), log_items)
            self._durable_logs[member.id] = log_items
        raw_applied = dict(state["meta"]).get(K_APPLIED)  # the disk's image holds records sealed
        applied = read_u64(unseal("meta", K_APPLIED, raw_applied)) if raw_applied else 0
        if applied > hs.commit:
            raise InvariantViolation(
                f"{member.name}'s disk holds applied index {applied} beyond its commit index {hs.commit}: "
                f"entries were applied before the Ready that committed them was persisted"
            )
        before = self._durable_applied.get(member.id, 0)
        if applied > before:
            self._check_applied(member, durable, before, applied)
        self._durable_applied[member.id] = applied

    def _check_new_entries(self, member: SimMember, old: Items, new: Items) -> None:
        """Log matching for the entries that became durable with this write."""
        seen = dict(old)
        prev_term = -1
        prev_index = -1
        for key, raw in new:
            index = read_u64(key)
            entry = decode_entry(index, unseal("log", key, raw))  # the disk's image holds records sealed
            if seen.get(key) != raw:
                expected_prev = prev_term if prev_index == index - 1 else -1
                logged = self._logged.setdefault((index, entry.term), _Logged(expected_prev, entry.type, entry.data))
                if logged.type != entry.type or logged.data != entry.data:
                    raise InvariantViolation(
                        f"log matching: {member.name} holds a different entry ({index}, term {entry.term})"
                    )
                if expected_prev >= 0 and logged.prev_term >= 0 and logged.prev_term != expected_prev:
                    raise InvariantViolation(
                        f"log matching: on {member.name} entry ({index}, term {entry.term}) follows term "
                        f"{expected_prev}, elsewhere term {logged.prev_term}"
                    )
            prev_index, prev_term = index, entry.term

    def _check_applied(self, member: SimMember, durable: object, before: int, applied: int) -> None:
        """One entry per index across all members: the newly applied entries' terms must agree."""
        log = member.disk.durable_log()
        for index in range(max(before + 1, log.first_index() - 1), applied + 1):
            try:
                term = log.term(index)
            except (CompactedError, UnavailableError):
                continue
            known = self._applied_terms.setdefault(index, term)
            if known != term:
                raise InvariantViolation(
                    f"state machine safety: {member.name} applied the entry of term {term} at index {index}; "
                    f"another member applied term {known} there"
                )
            c = self._committed.get(index)
            if c is not None and c[0] and c[0] != term:
                raise InvariantViolation(
                    f"state machine safety: {member.name} applied term {term} at {index}; the committed entry "
                    f"has term {c[0]}"
                )

    def _name(self, member_id: int) -> str:
        member = self._members.get(member_id)
        return member.name if member is not None else f"{member_id:x}"
