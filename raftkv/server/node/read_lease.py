"""The leader lease for linearizable reads: off by default, ``--experimental-leader-lease-reads`` turns it on.

A ReadIndex read (``reads.py``) costs a heartbeat round: the leader asks a quorum whether it still leads
before it serves. With the lease, a round that a quorum answered also buys time: the leader may serve reads
from its commit index without asking again until the lease runs out (Raft thesis §6.4.1).

Why a read under the lease is linearizable. A round started at time ``T`` on the leader's clock (before its
heartbeats left) and answered by a quorum ``Q``. Each member of ``Q`` heard the heartbeat at or after ``T``
and reset its election timer then. A member that heard its leader less than an election timeout ago
(``election_ticks`` ticks) neither grants a vote or pre-vote to anyone else nor campaigns itself
(``core/raft.py``, check-quorum's lease, on by default), and with the lease on, a member that restarts
refuses votes for an election timeout after it boots (``Config.refuse_votes_after_boot``), since it may
have answered the round just before it went down. Any new leader needs votes from a quorum, which
shares a member with ``Q``; so no other leader can be elected before ``T`` plus ``election_ticks - 1`` tick
intervals (a tick may land just after the timer reset), as that member's clock measures time. The lease ends
earlier than that by the clock-drift allowance, so while it holds, this member is the only leader, its
commit index covers every write acknowledged anywhere, and a read taken from it now is linearizable at now.

What it assumes, and why it is off by default:
- Clocks advance at rates that differ by at most ``MAX_CLOCK_DRIFT`` (10%): ``time.monotonic`` is not
  stepped, NTP slews it by at most 500 ppm, but a VM whose clock stalls or jumps breaks the bound.
- A member told that its leader's process is gone (a refused connection to the leader's peer port, the fast
  failover of ``core/failover.py``) forgets the lease at once. A firewall that *rejects* peer traffic to a
  live leader, rather than dropping it, would let the others elect a new leader inside this lease.
- A leadership transfer ends the lease for the rest of its term the moment it starts, even once given up
  (``Raft.lease_read_index``): the TIMEOUT_NOW already sent lets the transferee win at once.
Without the flag, every linearizable read asks a quorum, and no clock is trusted for safety.
"""

from __future__ import annotations

from raftkv.core.rawnode import RawNode

#: The largest difference in clock rate between two members that the lease tolerates, as a fraction.
MAX_CLOCK_DRIFT = 0.1
#: Rounds started and not answered yet that the lease remembers (one is in flight at a time; a lost one is
#: replaced by the next, so a handful is plenty).
MAX_TRACKED_ROUNDS = 16


def lease_seconds(election_ticks: int, heartbeat_ms: int, drift: float = MAX_CLOCK_DRIFT) -> float:
    """How long after a round starts its quorum's answer keeps this member the only possible leader."""
    assert election_ticks >= 2 and heartbeat_ms > 0 and 0 <= drift < 1, (election_ticks, heartbeat_ms, drift)
    return (election_ticks - 1) * heartbeat_ms / 1000 * (1 - drift)


class ReadLease:
    """The lease one leader holds in one term: when it runs out, and the rounds that may extend it."""

    def __init__(self, duration: float) -> None:
        assert duration > 0, duration
        self.duration = duration
        self._term = 0
        self._until = float("-inf")
        #: Rounds this member started while leading: context -> (term, start time).
        self._rounds: dict[bytes, tuple[int, float]] = {}

    def round_started(self, ctx: bytes, term: int, at: float) -> None:
        """A ReadIndex round left at ``at`` while this member led in ``term`` (0: it did not lead)."""
        if not term:
            return
        self._rounds[ctx] = (term, at)
        while len(self._rounds) > MAX_TRACKED_ROUNDS:
            del self._rounds[next(iter(self._rounds))]

    def round_answered(self, ctx: bytes, raw: RawNode) -> None:
        """The core says a quorum answered the round ``ctx``: if this member still leads in the term it
        started the round in, the lease holds until the round's start plus ``duration``."""
        started = self._rounds.pop(ctx, None)
        if started is None:
            return
        term, at = started
        if not raw.leads_in(term):
            return
        if term != self._term:
            self._term, self._until = term, float("-inf")
        self._until = max(self._until, at + self.duration)

    def read_index(self, raw: RawNode, now: float) -> int | None:
        """The index a read arriving ``now`` may be served from without a round, or None (no lease)."""
        if now >= self._until:
            return None
        return raw.lease_read_index(self._term)

    def renewal_due(self, now: float) -> bool:
        """Past half the lease: the next round should start now, so reads under load never wait for one."""
        return now >= self._until - self.duration / 2

    def end(self) -> None:
        """The leader changed: whatever this member held is void."""
        self._term, self._until = 0, float("-inf")
        self._rounds.clear()
