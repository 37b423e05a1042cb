"""The simulator runs the production node through faults and its checks pass; one seed is one exact run."""

from __future__ import annotations

import logging
import random
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, note, settings

from raftkv.server.config import member_id_for
from raftkv.sim.cluster import SimOptions
from raftkv.sim.member import MemberKnobs, peer_url
from raftkv.sim.network import LinkFaults
from raftkv.sim.run import run_schedule
from raftkv.sim.schedule import ARG_RANGE, FAILOVER_ENDS, FAULT_ARITY, PROFILES, Fault, Schedule, draw_args, generate
from raftkv.sim.strategies import schedules

SEEDS_PER_PROFILE = 3


@pytest.fixture(autouse=True)
def quiet_members() -> None:
    logging.getLogger("raftkv").setLevel(logging.WARNING)


@pytest.mark.parametrize("profile", PROFILES)
def test_same_seed_same_trace(profile: str) -> None:
    first = run_schedule(generate(7, profile))
    second = run_schedule(generate(7, profile))
    assert first.ok, first.error
    assert first.trace_hash == second.trace_hash
    assert first.events == second.events and first.stats == second.stats
    assert run_schedule(generate(8, profile)).trace_hash != first.trace_hash


def test_fault_arguments_follow_the_arity_table() -> None:
    """Generated faults take their arguments from ``FAULT_ARITY`` (a ``Fault`` asserts it), and each
    failover episode that needs an end gets the right one after it. Pure generation: no run."""
    rng = random.Random(1)
    for kind, arity in FAULT_ARITY.items():
        args = draw_args(rng, kind)
        assert len(args) == arity and all(0 <= a < ARG_RANGE for a in args)
    for seed in range(200):
        faults = generate(seed, "failover").faults
        for f in faults:
            if f.kind in FAILOVER_ENDS:
                assert any(g.kind == FAILOVER_ENDS[f.kind] and g.at > f.at for g in faults), (seed, f)


@pytest.mark.parametrize("profile", PROFILES)
def test_generated_schedules_pass(profile: str) -> None:
    for seed in range(1000, 1000 + SEEDS_PER_PROFILE):
        res = run_schedule(generate(seed, profile))
        assert res.ok, f"{res.error}\nreplay: python -m raftkv.sim replay --seed {seed} --profile {profile}"
        assert res.stats["committed"] > 0 and res.stats["reads"] > 0


@pytest.mark.parametrize("profile", PROFILES)
def test_generated_schedules_pass_with_leader_lease_reads(profile: str) -> None:
    """The leader lease (``--experimental-leader-lease-reads``) through every kind of fault: partitions that
    depose a leader still serving, crashes, announced crashes, transfers. The checker that would see a stale
    read is the same one that catches a lease too long (``test_checker_catches_bugs.py``)."""
    options = SimOptions(lease_reads=True)
    for seed in range(2000, 2000 + SEEDS_PER_PROFILE):
        res = run_schedule(generate(seed, profile), options)
        replay = f"python -m raftkv.sim replay --seed {seed} --profile {profile} --lease-reads"
        assert res.ok, f"{res.error}\nreplay: {replay}"
        assert res.stats["committed"] > 0 and res.stats["reads"] > 0


@settings(max_examples=8, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules())
def test_drawn_schedules_pass(schedule: Schedule) -> None:
    """Failures shrink to a minimal fault list; the printed Schedule is valid Python for ``run_schedule``."""
    note(repr(schedule))
    res = run_schedule(schedule)
    assert res.ok, res.error


def test_membership_changes_and_snapshots_take_effect() -> None:
    """A learner joins through `member add`, is promoted and a founder is removed, with frequent snapshots:
    the new member catches up (through a snapshot) and the cluster ends with the new configuration. Then
    every survivor crashes and restarts: each still refuses the removed founder (the convergence check)."""
    base = generate(0, "mixed")
    ids = {name: member_id_for("sim", peer_url(name)) for name in ("n1", "n2", "n3", "n4")}
    n1_slot = sorted(ids.values()).index(ids["n1"])  # faults name voters by their place in id order
    faults = (
        Fault(300, "add_learner"),
        Fault(900, "promote", (0,)),
        Fault(1500, "remove", (n1_slot,)),
        *(Fault(1700, "crash", (slot,)) for slot in range(3)),
        Fault(1750, "restart_all"),
    )
    knobs = MemberKnobs(snapshot_count=5, snapshot_catchup_entries=1)
    schedule = replace(base, nodes=3, faults=faults, link=LinkFaults(), knobs=knobs, duration=2000)
    res = run_schedule(schedule, SimOptions(keep_trace=0))
    assert res.ok, res.error
    assert sorted(res.members) == ["n2", "n3", "n4"]  # n4 joined as a learner and was promoted; n1 was removed
