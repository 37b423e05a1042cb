"""Raft's safety properties, checked as the simulation runs (after every event that could break them).

Each check is incremental so it can run after every event without making a run quadratic:

- **Election safety**: at most one leader per term (``_leaders``).
- **Vote durability**: a node's durable vote never changes within a term.
- **Log matching**: an entry (index, term) always has the same content and the same predecessor term,
  on every node and forever. By induction on the index this is exactly "two logs that share an
  (index, term) are identical up to it" -- checked when entries become durable.
- **Leader completeness**: an entry committed by the leader of term T is in the log of every leader of a
  later term. Commits are recorded with the term of the leader that advanced its commit index; every new
  leader is checked against all of them, and every current leader against each new one.
- **State machine safety**: no two nodes apply different entries (or snapshots) at one index.
- **Durability before acknowledgement**: a node only acknowledges entries (APP_RESP) and grants votes
  (VOTE_RESP) that are already durable on its disk -- the Ready contract's "send after fsync".
- **Commit monotonicity**: a node's commit index never decreases within a life, never restarts below its
  durable commit, and the durable term and commit never go backwards.

The client-visible properties (reads see acknowledged writes, acknowledged writes are never lost) are
checked in ``workload.py`` against the histories it records.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftkv.core.types import CompactedError, Entry, EntryType, Message, MessageType, Role, SnapshotMeta, UnavailableError
from raftkv.sim.node import SimNode


class InvariantViolation(AssertionError):
    """A safety property failed; the message says which, where and with what evidence."""


@dataclass(frozen=True, slots=True)
class _Logged:
    prev_term: int
    type: EntryType
    data: bytes


class Checker:
    def __init__(self, nodes: dict[int, SimNode]) -> None:
        self._nodes = nodes  # the cluster's live map, to re-check current leaders
        self._leaders: dict[int, int] = {}  # term -> leader id
        self._current_leaders: dict[int, int] = {}  # node id -> term it leads in
        self._logged: dict[tuple[int, int], _Logged] = {}  # (index, term) -> content
        self._applied: dict[int, tuple[int, EntryType, bytes]] = {}  # index -> (term, type, data)
        self._snap_terms: dict[int, int] = {}  # index -> term, from installed snapshots
        self._committed: dict[int, tuple[int, int]] = {}  # index -> (entry term, term of committing leader)
        self._committed_upto = 0
        self._commit: dict[int, int] = {}  # node id -> commit index seen in the current life
        self._durable: dict[int, tuple[int, int, int]] = {}  # node id -> durable (term, vote, commit)
        self.elections = 0

    def current_leader(self) -> int | None:
        """The node leading the highest term among those currently leading, if any."""
        if not self._current_leaders:
            return None
        return max(self._current_leaders.items(), key=lambda kv: (kv[1], kv[0]))[0]

    def is_leader(self, node_id: int) -> bool:
        return node_id in self._current_leaders

    @property
    def max_committed(self) -> int:
        return self._committed_upto

    # -- lifecycle ------------------------------------------------------------------------------------

    def restarted(self, node: SimNode) -> None:
        """A life begins: its commit may be below the last life's volatile one, never below the durable one."""
        self._commit[node.id] = node.disk.storage.hard_state.commit
        self._current_leaders.pop(node.id, None)

    def crashed(self, node: SimNode) -> None:
        self._current_leaders.pop(node.id, None)

    # -- after every event touching a node --------------------------------------------------------------

    def observe(self, node: SimNode) -> None:
        raw = node.raw
        if raw is None:
            return
        st = raw.status()
        hs, role = st.hard_state, st.soft_state.role
        last = self._commit.get(node.id, 0)
        if hs.commit < last:
            raise InvariantViolation(f"n{node.id} commit index went back from {last} to {hs.commit}")
        self._commit[node.id] = hs.commit
        if role != Role.LEADER:
            self._current_leaders.pop(node.id, None)
            return
        term = hs.term
        other = self._leaders.setdefault(term, node.id)
        if other != node.id:
            raise InvariantViolation(f"two leaders in term {term}: n{other} and n{node.id}")
        if self._current_leaders.get(node.id) != term:
            self._current_leaders[node.id] = term
            self.elections += 1
            self._check_completeness(node, term, 1)
        if hs.commit > self._committed_upto:
            self._record_commits(node, term, hs.commit)

    def _record_commits(self, leader: SimNode, term: int, commit: int) -> None:
        storage = leader.disk.storage
        start = self._committed_upto + 1
        hi = min(commit, storage.last_index())
        for i in range(start, hi + 1):
            if i >= storage.first_index():
                entry_term = storage.term(i)
            elif i in self._applied:
                entry_term = self._applied[i][0]
            else:
                entry_term = self._snap_terms.get(i, 0)
            self._committed[i] = (entry_term, term)
        if hi >= start:
            self._committed_upto = hi
            for lid, lterm in sorted(self._current_leaders.items()):
                if lterm > term:
                    self._check_completeness(self._nodes[lid], lterm, start)

    def _check_completeness(self, leader: SimNode, term: int, start: int) -> None:
        storage = leader.disk.storage
        first, last = storage.first_index(), storage.last_index()
        for i in range(max(start, first), self._committed_upto + 1):
            entry_term, commit_term = self._committed[i]
            if commit_term >= term or entry_term == 0:
                continue
            have = storage.term(i) if i <= last else None
            if have != entry_term:
                raise InvariantViolation(
                    f"leader completeness: n{leader.id} leads term {term} but its log has "
                    f"{'nothing' if have is None else f'term {have}'} at index {i}, committed with term "
                    f"{entry_term} by the leader of term {commit_term}"
                )

    # -- durability ---------------------------------------------------------------------------------------

    def synced(self, node: SimNode) -> None:
        hs = node.disk.storage.hard_state
        term, vote, commit = self._durable.get(node.id, (0, 0, 0))
        if hs.term < term or (hs.term == term and hs.commit < commit):
            raise InvariantViolation(f"n{node.id} durable hard state went back: {(term, vote, commit)} -> {hs}")
        if hs.term == term and vote and hs.vote != vote:
            raise InvariantViolation(f"n{node.id} changed its vote in term {term}: n{vote} then n{hs.vote}")
        self._durable[node.id] = (hs.term, hs.vote, hs.commit)

    def sending(self, node: SimNode, msg: Message) -> None:
        storage = node.disk.storage
        if msg.type == MessageType.APP_RESP and not msg.reject and msg.index > storage.last_index():
            raise InvariantViolation(
                f"n{node.id} acknowledged index {msg.index} to n{msg.to} but only {storage.last_index()} is durable"
            )
        if msg.type == MessageType.VOTE_RESP and not msg.reject:
            hs = storage.hard_state
            if (hs.term, hs.vote) != (msg.term, msg.to):
                raise InvariantViolation(
                    f"n{node.id} granted its term {msg.term} vote to n{msg.to} but its disk holds term {hs.term} "
                    f"vote n{hs.vote}"
                )

    def persisted(self, node: SimNode, entries: list[Entry]) -> None:
        storage = node.disk.storage
        try:
            prev_term = storage.term(entries[0].index - 1)
        except (CompactedError, UnavailableError):
            prev_term = -1  # predecessor already compacted here: nothing to compare
        for e in entries:
            seen = self._logged.setdefault((e.index, e.term), _Logged(prev_term, e.type, e.data))
            if seen.type != e.type or seen.data != e.data:
                raise InvariantViolation(f"log matching: n{node.id} holds a different entry ({e.index}, term {e.term})")
            if prev_term >= 0 and seen.prev_term >= 0 and seen.prev_term != prev_term:
                raise InvariantViolation(
                    f"log matching: on n{node.id} entry ({e.index}, term {e.term}) follows term {prev_term}, "
                    f"elsewhere term {seen.prev_term}"
                )
            prev_term = e.term

    # -- application ----------------------------------------------------------------------------------------

    def applied(self, node: SimNode, e: Entry) -> None:
        seen = self._applied.setdefault(e.index, (e.term, e.type, e.data))
        if seen != (e.term, e.type, e.data):
            raise InvariantViolation(
                f"state machine safety: n{node.id} applied (term {e.term}, {e.data!r}) at index {e.index}, "
                f"another node applied (term {seen[0]}, {seen[2]!r})"
            )
        self._check_against_commit(node, e.index, e.term)

    def snapshot_installed(self, node: SimNode, meta: SnapshotMeta) -> None:
        known = self._applied.get(meta.index, (meta.term,))[0]
        if known != meta.term:
            raise InvariantViolation(f"n{node.id} installed a snapshot at {meta.index} term {meta.term}; applied term {known}")
        self._snap_terms[meta.index] = meta.term
        self._check_against_commit(node, meta.index, meta.term)

    def _check_against_commit(self, node: SimNode, index: int, term: int) -> None:
        c = self._committed.get(index)
        if c is not None and c[0] and c[0] != term:
            raise InvariantViolation(
                f"state machine safety: n{node.id} applied term {term} at {index}; committed entry has term {c[0]}"
            )
