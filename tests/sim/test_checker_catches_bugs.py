"""The checker can fail: each planted bug, in the core or in the driver, is caught within a few schedules.

Seed searches are deterministic (the same seeds every run), so these tests are not flaky; the bounds leave
a wide margin over where the bug is first caught today (noted beside each), in case core changes move it.
"""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, find, settings

from raftkv.sim.cluster import SimOptions
from raftkv.sim.run import RunResult, run_schedule
from raftkv.sim.schedule import Schedule, generate
from raftkv.sim.strategies import schedules


def first_failure(profile: str, options: SimOptions, max_seeds: int) -> RunResult:
    for seed in range(max_seeds):
        res = run_schedule(generate(seed, profile), options)
        if not res.ok:
            return res
    raise AssertionError(f"{options} not caught in {max_seeds} {profile} schedules")


def test_commit_prior_term_is_caught_in_figure8_schedules() -> None:
    res = first_failure("figure8", SimOptions(core_bugs=frozenset({"commit_prior_term"})), 30)  # today: seed 1
    assert res.error is not None
    assert "leader completeness" in res.error or "state machine safety" in res.error, res.error


def test_double_vote_is_caught_and_shrinks_to_a_small_schedule() -> None:
    options = SimOptions(core_bugs=frozenset({"double_vote"}))

    def fails(s: Schedule) -> bool:
        return not run_schedule(s, options).ok

    shrunk = find(
        schedules(),
        fails,
        settings=settings(
            max_examples=30,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        ),
    )
    error = run_schedule(shrunk, options).error
    assert error is not None and ("vote" in error or "two leaders" in error), error
    assert len(shrunk.faults) <= 2, shrunk


def test_double_vote_is_caught_in_split_vote_schedules() -> None:
    res = first_failure("split_vote", SimOptions(core_bugs=frozenset({"double_vote"})), 10)  # today: seed 0
    assert res.error is not None and ("vote" in res.error or "two leaders" in res.error), res.error


def test_reads_without_read_index_are_caught() -> None:
    res = first_failure("mixed", SimOptions(sim_bugs=frozenset({"stale_read"})), 10)  # today: seed 0
    assert res.error is not None and "stale read" in res.error, res.error


def test_sending_before_fsync_is_caught() -> None:
    res = first_failure("crashes", SimOptions(sim_bugs=frozenset({"send_before_fsync"})), 5)  # today: seed 0
    assert res.error is not None and ("granted" in res.error or "acknowledged" in res.error), res.error
