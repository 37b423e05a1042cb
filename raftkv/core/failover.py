"""Who campaigns first when the followers learn that their leader's process is gone.

A killed process is not a silent one: its kernel closes its connections, and a reconnect to its port is
refused. The driver reports that (``RawNode.report_peer_gone``), and every follower of the dead leader hears
it within a millisecond or so of the others. If they all started a pre-vote at once, each would grant the
other's (a follower without a leader grants pre-votes), all would become candidates in the same term, vote
for themselves and split the vote, and the cluster would wait out a randomized election timeout after all.

So the followers take turns, by a rank every one of them computes alike from the membership alone: the
lowest id among the remaining voters campaigns at once, the next one ``STAGGER_TICKS`` later, and so on.
By the time the second one's turn comes, the first has normally won (a pre-vote and a vote round: a few
milliseconds) and the second has voted for it, which resets its election timer. A turn is an upper bound,
never a promise: hearing a leader or granting a vote resets the timer, as it always does.
"""

from __future__ import annotations

from collections.abc import Set

#: Ticks between two followers' turns: two heartbeat intervals, so that a tick arriving just after the
#: report (ticks are not aligned across members) still leaves the earlier turn at least one whole interval.
STAGGER_TICKS = 2


def campaign_delay(node: int, voters: Set[int], gone: int) -> int:
    """Ticks ``node`` waits before campaigning after learning that ``gone`` (its leader) is gone."""
    assert node in voters and node != gone, "only a voter other than the dead leader campaigns"
    rank = sorted(v for v in voters if v != gone).index(node)
    return rank * STAGGER_TICKS
