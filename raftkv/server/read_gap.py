"""How long a loaded member leaves between the starts of two ReadIndex rounds: found by trying.

Every round costs the same whatever the number of reads it carries: a heartbeat to and an answer from each
follower, and a Ready turn on every member (about 0.7 ms of the leader's CPU on the 2-core reference
machine). Under load (reads were waiting when the last round ended; ``ReadWaiters``) the next round waits
for a gap after the last one started, so that it carries more reads. Whether a longer gap pays cannot be
seen from inside the member:

- A few clients reading in a loop (get-l c=4): soon after a round is answered, every client's next read
  is queued; a longer gap only delays them. Measured, 689 reads/s with a 2 ms gap, 360 with 10 ms.
- Many clients and a saturated event loop (get-l c=64): calls wait in gRPC's own queue, where the member
  cannot count them, and come in as fast as the loop frees up; the CPU a longer gap saves on rounds goes
  to them. Measured, 1,440 reads/s with a 2 ms gap, 2,546 with 10 ms.

So the gap climbs the hill of what it is for, the rate at which reads are served: after each ``WINDOW`` of
rounds it moves one step in its current direction, turns back if the rate fell by more than noise, and
bounces off either bound, so that it keeps probing for a load that changed. A closed loop of a few clients
keeps it between its least and one step above; a saturated leader keeps it near its most. Both bounds are
harmless: at most ``MOST`` of added wait per read, far below any deadline. It only paces rounds under
load; a read that arrives when none was waiting starts its round at once, so a lone client never waits.
"""

from __future__ import annotations

#: The bounds of the gap: the least is what a closed loop of a few clients wants (a client's next read comes
#: about a millisecond after its answer); past the most, rounds of a saturated leader carry no more reads.
LEAST = 0.001
MOST = 0.010
#: Each move multiplies or divides the gap by this: from the least to the most in six windows.
STEP = 1.5
#: Seconds of rounds per judgement: long enough for a few hundred reads under load.
WINDOW = 0.25
#: A fall in the rate smaller than this is noise (a loaded machine's rate moves a few per cent from one
#: window to the next), not a reason to turn back.
TOLERANCE = 0.05


class RoundGap:
    """The current gap (``seconds``), told of every round as it starts. Pure: time is passed in."""

    def __init__(self, least: float = LEAST, most: float = MOST, step: float = STEP, window: float = WINDOW) -> None:
        assert 0 < least <= most and step > 1 and window > 0
        self._least, self._most, self._step, self._window = least, most, step, window
        self.seconds = least
        self._up = True  # the direction of the next move
        self._window_start: float | None = None
        self._last_round = float("-inf")
        self._reads = 0
        self._last_rate: float | None = None

    def round_started(self, now: float, reads: int) -> None:
        """A round carrying ``reads`` started at ``now``; judge the window if it is complete."""
        if now - self._last_round > self._window:
            # Reads stopped for a while: what follows is a new load, not a verdict on the gap.
            self._window_start, self._reads, self._last_rate = now, 0, None
        self._last_round = now
        assert self._window_start is not None
        self._reads += reads
        elapsed = now - self._window_start
        if elapsed < self._window:
            return
        rate = self._reads / elapsed
        if self._last_rate is not None and rate < self._last_rate * (1 - TOLERANCE):
            self._up = not self._up
        self._last_rate = rate
        factor = self._step if self._up else 1 / self._step
        self.seconds = min(self._most, max(self._least, self.seconds * factor))
        if self.seconds in (self._least, self._most):
            # Bounce: the next move probes back into the range, so that a load that changed is noticed.
            self._up = self.seconds == self._least
        self._window_start, self._reads = now, 0
