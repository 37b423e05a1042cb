"""The gap between loaded ReadIndex rounds finds the side of its range that serves reads faster, against two
models of load measured on the reference machine (``raftkv/server/read_gap.py``): a few clients reading in
a loop, whom a longer gap only delays, and a saturated leader, which a longer gap leaves more CPU to serve."""

from __future__ import annotations

from collections.abc import Callable

from raftkv.server.read_gap import LEAST, MOST, RoundGap

ROUND_TRIP = 0.0015  # from a round's start to its answer


def run(gap: RoundGap, rate_at: Callable[[float], float], seconds: float, start: float = 100.0) -> list[float]:
    """Rounds back to back, each ``ROUND_TRIP + gap`` after the last, carrying what ``rate_at(gap)`` brings in
    that time; returns the gap in force at each millisecond."""
    now, gaps, owed = start, [], 0.0
    while now < start + seconds:
        between = ROUND_TRIP + gap.seconds
        owed += rate_at(gap.seconds) * between  # whole reads per round, the fractions carried to the next
        reads = max(1, int(owed))
        owed -= reads
        gap.round_started(now, reads)
        gaps.extend([gap.seconds] * max(1, round(between * 1000)))
        now += between
    return gaps


def closed_loop(clients: int) -> Callable[[float], float]:
    """Each client's next read is queued soon after its answer: a round carries every client, however long
    the gap, so the rate is ``clients`` per round."""
    return lambda gap: clients / (ROUND_TRIP + gap)


def saturated(gap: float) -> float:
    """A leader whose CPU is the limit, as fitted to get-l c=64 on the reference machine (716 us of CPU per
    read with a 2 ms gap, 416 with 10 ms): 0.37 ms per read plus 1.2 ms per round, shared by the reads that
    arrive during one (the rate itself times the round's span). Solved for the rate."""
    span = ROUND_TRIP + gap
    return (1 - 0.0012 / span) / 0.00037


def test_a_few_clients_reading_in_a_loop_keep_the_gap_near_its_least() -> None:
    gaps = run(RoundGap(), closed_loop(4), seconds=30)
    late = gaps[len(gaps) // 2:]
    assert sum(late) / len(late) < 2.5 * LEAST, "the gap should hover near its least"


def test_a_saturated_leader_climbs_to_the_longest_gap_and_stays_near_it() -> None:
    gaps = run(RoundGap(), saturated, seconds=30)
    assert max(gaps[:2000]) == MOST, "six windows (1.5 s) should reach the most"
    late = gaps[len(gaps) // 2:]
    assert sum(late) / len(late) > 0.5 * MOST


def test_the_gap_follows_a_load_that_changes_after_a_pause() -> None:
    gap = RoundGap()
    run(gap, saturated, seconds=5)
    assert gap.seconds > 0.5 * MOST
    few = run(gap, closed_loop(4), seconds=10, start=200.0)
    assert sum(few[-3000:]) / 3000 < 2.5 * LEAST
    many = run(gap, saturated, seconds=10, start=300.0)
    assert sum(many[-5000:]) / 5000 > 0.5 * MOST


def test_the_gap_never_leaves_its_bounds() -> None:
    gap = RoundGap()
    gaps = run(gap, closed_loop(64), seconds=5) + run(gap, saturated, seconds=5, start=200.0)
    assert all(LEAST <= g <= MOST for g in gaps)
