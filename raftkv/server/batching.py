"""How long the Raft loop lets work gather before a turn when many of its member's proposals are in flight.

Each turn of the loop (``node.Node._ready_loop``) has a cost that does not depend on how many proposals it
carries: an LMDB commit with its fsyncs, one append per follower and their answers, thread handoffs. Under
load a leader is CPU-bound, so that fixed cost, not the work per put, sets its throughput. Measured with
``python -m raftkv.bench`` on the reference two-core machine (three members, client on the same host):
at put c=64 a turn costs the leader about as much CPU as five puts, and without a pause the loop turns
about 400 times a second with six puts each.

Waiting a few milliseconds before a turn, while proposals are arriving anyway, lets one turn carry more of
them together with both followers' answers: fewer turns, fewer fsyncs and fewer messages for the same puts.
Nobody waits longer for it in the end: a saturated member's latency is set by its queue, which drains faster.

The rule is PostgreSQL's ``commit_delay``/``commit_siblings``: pause only when at least ``min_pending``
proposals are already in flight, so the pause is shared by many requests and a lone client (or a light
load) never pays it. The pause is far below the heartbeat interval, so elections and leases are unaffected.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchWindow:
    """``delay`` in seconds (0 turns the pause off); ``min_pending`` proposals in flight before it applies."""

    delay: float
    min_pending: int

    def __post_init__(self) -> None:
        assert self.delay >= 0 and self.min_pending >= 1, self

    def pause_before_turn(self, pending: int) -> float:
        """Seconds to wait before the next turn, given how many of this member's proposals are in flight."""
        return self.delay if self.delay > 0 and pending >= self.min_pending else 0.0
