"""The checkers can fail: each planted bug, in the core, in the node or beneath it, is caught — and a
failing schedule shrinks to a small one that still shows it.

Seed searches are deterministic (the same seeds every run), so these tests are not flaky; the bounds leave
a wide margin over where each bug is first caught today (noted beside each), in case the code moves it.
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, Phase, find, settings
from hypothesis import strategies as st

from raftkv.sim.cluster import SimOptions
from raftkv.sim.run import RunResult, run_schedule
from raftkv.sim.schedule import Schedule, generate
from raftkv.sim.strategies import failover_schedules, schedules

SHRINK = settings(
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(autouse=True)
def quiet_members() -> None:
    """A planted bug makes members log what went wrong; the verdict is what these tests read."""
    logging.getLogger("raftkv").setLevel(logging.CRITICAL)


def first_failure(profile: str, options: SimOptions, max_seeds: int) -> RunResult:
    for seed in range(max_seeds):
        res = run_schedule(generate(seed, profile), options)
        if not res.ok:
            return res
    raise AssertionError(f"{options} not caught in {max_seeds} {profile} schedules")


#: Schedules one shrink may run. Hypothesis stops shrinking only after five minutes of wall-clock time, and
#: a run of the production node costs about 0.1-0.5 s here (more on a loaded machine): unbounded, one
#: shrink took 282 runs, 153 s on a quiet machine and past the test timeout at load 15. Once the budget is
#: spent every further candidate counts as passing, so the smallest failure found so far is the answer.
SHRINK_RUNS = 150


def shrunk_failure(options: SimOptions, drawn: st.SearchStrategy[Schedule] | None = None,
                   examples: int = SHRINK.max_examples) -> tuple[Schedule, str]:
    """Hypothesis finds a failing schedule among ``examples`` drawn and shrinks it (within ``SHRINK_RUNS``);
    returns it with its error.

    Derandomized is not the same as fixed: Hypothesis mixes the literal constants of every local module
    loaded into what it draws, so which schedules come out depends on which test modules the run collected
    (a bug caught in the 11th schedule alone was missed in all 25 with ``tests/statemachine`` collected
    too). A bug that only some schedules show needs a search budget wide enough not to care."""
    verdicts: dict[Schedule, bool] = {}

    def fails(s: Schedule) -> bool:
        # Remembered, so that the replay hypothesis makes of the example it settled on gets that example's
        # verdict even once the budget is spent (without it: "Failed to reproduce exception").
        if s not in verdicts:
            verdicts[s] = len(verdicts) < SHRINK_RUNS and not run_schedule(s, options).ok
        return verdicts[s]

    shrunk = find(drawn if drawn is not None else schedules(max_faults=6, duration=1000), fails,
                  settings=settings(SHRINK, max_examples=examples))
    error = run_schedule(shrunk, options).error
    assert error is not None
    return shrunk, error


def test_commit_prior_term_is_caught_in_figure8_schedules() -> None:
    res = first_failure("figure8", SimOptions(core_bugs=frozenset({"commit_prior_term"})), 30)
    assert res.error is not None
    assert "leader completeness" in res.error or "state machine safety" in res.error, res.error


def test_double_vote_is_caught_in_split_vote_schedules() -> None:
    res = first_failure("split_vote", SimOptions(core_bugs=frozenset({"double_vote"})), 10)
    assert res.error is not None and ("vote" in res.error or "two leaders" in res.error), res.error


def test_serving_a_lease_query_before_the_grant_is_applied_is_caught_and_shrinks() -> None:
    # A fault phase of 600 (virtual time) rather than 1,000: long enough to catch it (about one schedule in
    # eight shows it), short enough that it shrinks in about 50 runs.
    shrunk, error = shrunk_failure(SimOptions(planted_bug="lease-query-before-apply"),
                                   schedules(max_faults=6, duration=600), examples=100)
    assert "stale lease answer" in error, error
    assert len(shrunk.faults) <= 1, shrunk


def test_applying_before_persisting_is_caught_and_shrinks() -> None:
    shrunk, error = shrunk_failure(SimOptions(planted_bug="apply-before-persist"))
    assert "applied index" in error and "beyond its commit index" in error, error
    assert len(shrunk.faults) <= 1, shrunk


def test_skipping_the_fsync_before_acknowledging_is_caught_and_shrinks() -> None:
    """The bug kill -9 cannot show (the page cache survives a process): the simulated disk loses it."""
    shrunk, error = shrunk_failure(SimOptions(planted_bug="skip-fsync"))
    assert "durable" in error or "disk holds" in error or "went back" in error, error
    assert len(shrunk.faults) <= 1, shrunk


def test_acknowledging_an_append_that_is_committed_but_not_flushed_is_caught_and_shrinks() -> None:
    """The store opens LMDB ``metasync=False``: a commit is undone by a power loss until it is flushed (or
    the next commit is made). Appends answered after the commit but before the flush: the simulated disk,
    which models exactly that, shows the acknowledgement of entries a crash would lose."""
    shrunk, error = shrunk_failure(SimOptions(planted_bug="ack-unflushed-append"))
    assert "durable" in error or "disk holds" in error or "went back" in error, error
    assert len(shrunk.faults) <= 1, shrunk


def test_reads_without_read_index_are_caught() -> None:
    res = first_failure("mixed", SimOptions(planted_bug="stale-reads"), 10)  # today: seed 0
    assert res.error is not None and "stale read" in res.error, res.error


def test_a_read_lease_longer_than_the_election_timeout_is_caught() -> None:
    """A leader lease twenty times what the election timeout allows: a leader cut off from the others keeps
    answering linearizable reads (and the lease checks behind a read barrier) after its successor moved on."""
    res = first_failure("mixed", SimOptions(planted_bug="read-lease-too-long"), 20)  # today: seed 4
    assert res.error is not None and "stale" in res.error, res.error


def test_an_early_election_without_pre_vote_is_caught_and_shrinks() -> None:
    """A follower told falsely that its live leader is gone holds a real election at once: the leader, which
    a quorum still hears, loses office to the higher term, and the leadership audit calls it out; the drawn
    schedule shrinks to the one false report. (The failover profile catches it too, today at its seed 1:
    ``python -m raftkv.sim soak --profile failover --core-bug gone_skips_pre_vote``.)"""
    options = SimOptions(core_bugs=frozenset({"gone_skips_pre_vote"}))
    shrunk, error = shrunk_failure(options, failover_schedules(max_faults=6, duration=1000))
    assert "extra leader change" in error, error
    assert [f.kind for f in shrunk.faults] in (["false_gone_leader"], ["false_gone"]), shrunk
