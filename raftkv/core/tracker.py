"""What the leader knows about each follower's log, and how much it may send it.

A follower's ``Progress`` is in one of three states (see etcd-io/raft's design.md):

- PROBE: the leader does not know where the follower's log diverges; it sends one APP at a time and waits
  for the answer (accept or reject with a hint) before sending the next.
- REPLICATE: the follower is known to match up to ``match``; APPs are pipelined optimistically, bounded by
  an ``Inflights`` window so a slow follower cannot make the leader buffer without bound.
- SNAPSHOT: the entries the follower needs were compacted; a SNAP is in flight and nothing else is sent
  until the follower acknowledges it (or the driver reports it failed).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """A bounded FIFO of the last indexes of APPs sent but not yet acknowledged (with their byte sizes).

    Full when either the message count or the byte total reaches its bound; acknowledgements free a prefix.
    """

    def __init__(self, max_count: int, max_bytes: int = 0) -> None:
        assert max_count > 0, "inflight window must allow at least one message"
        self.max_count = max_count
        self.max_bytes = max_bytes  # 0: unbounded
        self._items: deque[tuple[int, int]] = deque()
        self._bytes = 0

    def add(self, index: int, size: int) -> None:
        assert not self.full(), "adding to a full inflight window"
        assert not self._items or self._items[-1][0] < index, "inflight indexes must increase"
        self._items.append((index, size))
        self._bytes += size

    def free_le(self, index: int) -> None:
        """Forget every message whose last index is <= ``index`` (the follower has it)."""
        while self._items and self._items[0][0] <= index:
            self._bytes -= self._items.popleft()[1]

    def full(self) -> bool:
        return len(self._items) >= self.max_count or (self.max_bytes > 0 and self._bytes >= self.max_bytes)

    def count(self) -> int:
        return len(self._items)

    def reset(self) -> None:
        self._items.clear()
        self._bytes = 0


@dataclass
class Progress:
    """Replication state of one peer as seen by the leader.

    Invariant: ``match < next``. ``recent_active`` is set by any response from the peer and cleared by each
    check-quorum round, so a leader cut off from a majority notices within an election timeout.
    """

    match: int
    next: int
    inflights: Inflights
    is_learner: bool = False
    state: ProgressState = ProgressState.PROBE
    pending_snapshot: int = 0
    recent_active: bool = False
    msg_app_flow_paused: bool = False
    #: Highest commit index sent to the peer (APP or heartbeat), so the leader knows when a newer commit index
    #: is worth an extra (empty) APP instead of waiting for the next heartbeat.
    sent_commit: int = 0

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:
        assert self.match < self.next, f"progress invariant broken: match={self.match} next={self.next}"

    def _reset_state(self, state: ProgressState) -> None:
        self.msg_app_flow_paused = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        """Probe from just after what we know the peer has (or after the snapshot it was sent)."""
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1
        self._check()

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1
        self._check()

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index
        self.next = max(self.next, snapshot_index + 1)
        self._check()

    def sent_entries(self, count: int, size: int) -> None:
        """Account for an APP just sent carrying ``count`` entries starting at ``next``."""
        if self.state == ProgressState.REPLICATE:
            if count:
                self.next += count
                self.inflights.add(self.next - 1, size)
            self.msg_app_flow_paused = self.inflights.full()
        elif self.state == ProgressState.PROBE:
            # One probe in flight: wait for its answer (or a heartbeat response) before sending more.
            if count:
                self.msg_app_flow_paused = True
        else:
            raise AssertionError(f"sending entries in state {self.state.name}")

    def maybe_update(self, index: int) -> bool:
        """The peer acknowledged ``index``; returns False for a stale (already known) acknowledgement."""
        updated = self.match < index
        if updated:
            self.match = index
            self.msg_app_flow_paused = False
        self.next = max(self.next, index + 1)
        self._check()
        return updated

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """The peer rejected an APP whose previous entry was ``rejected``; move ``next`` back.

        Returns False when the rejection is stale (an answer to an older probe), so reordered or duplicated
        responses cannot walk ``next`` back below what is known to match.
        """
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            self.sent_commit = min(self.sent_commit, self.next - 1)
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.sent_commit = min(self.sent_commit, self.next - 1)
        self.msg_app_flow_paused = False
        self._check()
        return True

    def can_bump_commit(self, commit: int) -> bool:
        """Whether sending ``commit`` could advance the peer's commit index (it has not been told yet)."""
        return self.state != ProgressState.SNAPSHOT and self.sent_commit < commit

    def is_paused(self) -> bool:
        """Whether the leader should hold back APPs to this peer (heartbeats still go out)."""
        if self.state == ProgressState.SNAPSHOT:
            return True
        return self.msg_app_flow_paused


@dataclass(frozen=True)
class PeerStatus:
    """Read-only view of a ``Progress`` for ``RawNode.status()``."""

    match: int
    next: int
    state: ProgressState
    is_learner: bool
    pending_snapshot: int
    recent_active: bool
    paused: bool
    inflight: int = field(default=0)

    @classmethod
    def of(cls, pr: Progress) -> PeerStatus:
        return cls(
            pr.match, pr.next, pr.state, pr.is_learner, pr.pending_snapshot, pr.recent_active, pr.is_paused(),
            pr.inflights.count(),
        )
