"""The simulator runs the real core through faults and its checks pass; one seed is one exact run."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, note, settings

from raftkv.sim.cluster import SimOptions
from raftkv.sim.network import LinkFaults
from raftkv.sim.node import NodeKnobs
from raftkv.sim.run import run_schedule
from raftkv.sim.schedule import PROFILES, Fault, Schedule, generate
from raftkv.sim.strategies import schedules

SEEDS_PER_PROFILE = 6


@pytest.mark.parametrize("profile", PROFILES)
def test_same_seed_same_trace(profile: str) -> None:
    first = run_schedule(generate(7, profile))
    second = run_schedule(generate(7, profile))
    assert first.ok, first.error
    assert first.trace_hash == second.trace_hash
    assert first.events == second.events and first.stats == second.stats
    assert run_schedule(generate(8, profile)).trace_hash != first.trace_hash


@pytest.mark.parametrize("profile", PROFILES)
def test_generated_schedules_pass(profile: str) -> None:
    for seed in range(1000, 1000 + SEEDS_PER_PROFILE):
        res = run_schedule(generate(seed, profile))
        assert res.ok, f"{res.error}\nreplay: python -m raftkv.sim replay --seed {seed} --profile {profile}"
        assert res.stats["committed"] > 0


@settings(max_examples=20, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules())
def test_drawn_schedules_pass(schedule: Schedule) -> None:
    """Failures shrink to a minimal fault list; the printed Schedule is valid Python for ``run_schedule``."""
    note(repr(schedule))
    res = run_schedule(schedule)
    assert res.ok, res.error


def test_membership_changes_and_snapshots_take_effect() -> None:
    """A learner joins, is promoted and a founder is removed, with frequent snapshots: the new member
    catches up (through a snapshot) and the cluster ends with the new configuration."""
    base = generate(0, "mixed")
    faults = (
        Fault(300, "add_learner"),
        Fault(700, "promote", (0,)),
        Fault(1100, "remove", (0,)),
        Fault(1400, "snapshot", (1,)),
    )
    schedule = replace(base, nodes=3, faults=faults, link=LinkFaults(), knobs=NodeKnobs(snapshot_every=5))
    res = run_schedule(schedule, SimOptions(keep_trace=0))
    assert res.ok, res.error
    assert res.members == (2, 3, 4)  # n4 joined as a learner and was promoted; n1 was removed
