"""Early failover in the simulator, through the production node and transport interface: announced crashes,
false "gone" reports, resets and partitions.

Schedules with ``stable_leader`` fail outright when a leader a quorum still hears loses office (the
leadership audit), so every run below that passes also says so; these tests add that the cases were
exercised, that announcing a crash is what shortens failover, and that the new leader serves at once.
The failover profile's own schedules run in ``test_simulator.py`` and, many more, in ``make sim-soak``.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, note, settings

from raftkv.sim.leadership import Failover
from raftkv.sim.network import LinkFaults
from raftkv.sim.run import RunResult, run_schedule
from raftkv.sim.schedule import Fault, Schedule
from raftkv.sim.strategies import failover_schedules

HEARTBEAT = 10  # time units; the election timeout is 100-200
MAX_LATENCY = 6
FSYNC = 2  # MemberKnobs' default fsync latency bound
#: A leader's round: its entry persisted and sent, a follower's fsync and answer, and a tick of slack for the
#: Ready loop and the writer's batching.
ROUND = 2 * (MAX_LATENCY + FSYNC) + HEARTBEAT


@pytest.fixture(autouse=True)
def quiet_members() -> None:
    logging.getLogger("raftkv").setLevel(logging.CRITICAL)


def passing(schedule: Schedule) -> RunResult:
    res = run_schedule(schedule)
    assert res.ok, f"{res.error}\n{schedule!r}"
    return res


def leader_crashes(seed: int, announce: bool) -> Schedule:
    """Three leader crashes, each followed by a restart and time to settle, with clients busy throughout."""
    faults = tuple(f for t in (400, 900, 1400) for f in (Fault(t, "crash_leader"), Fault(t + 200, "restart_all")))
    return Schedule(seed, nodes=3, faults=faults, link=LinkFaults(max_latency=MAX_LATENCY), clients=4,
                    duration=1700, announce=announce, stable_leader=True)


@pytest.fixture(scope="module")
def crashed_leaders() -> dict[bool, list[RunResult]]:
    """The same leader crashes, announced and silent (run once for the tests below)."""
    logging.getLogger("raftkv").setLevel(logging.CRITICAL)
    return {announce: [passing(leader_crashes(seed, announce)) for seed in (1, 2)] for announce in (True, False)}


def milestones(results: list[RunResult], kind: str) -> list[Failover]:
    found = [f for r in results for f in r.audit.failovers if f.kind == kind]
    assert found, kind
    return found


def test_an_announced_crash_fails_over_in_a_fraction_of_an_election_timeout(
    crashed_leaders: dict[bool, list[RunResult]],
) -> None:
    announced = milestones(crashed_leaders[True], "crash announced")
    silent = milestones(crashed_leaders[False], "crash silent")
    elected = [f.elected for f in announced if f.elected is not None]
    assert len(elected) == len(announced) >= 5
    # The reset, the probe's round trip, a pre-vote and a vote round: a few latencies, not 100-200 units.
    assert max(elected) < 60, elected
    assert statistics.median(elected) * 4 < statistics.median(f.elected for f in silent if f.elected), silent


def test_a_new_leader_serves_reads_and_leases_at_once_after_an_announced_crash(
    crashed_leaders: dict[bool, list[RunResult]],
) -> None:
    """Asked at its election, the new leader commits the first entry of its term within one round, answers
    a linearizable read barrier (ReadIndex: that entry, then a heartbeat round) and then a lease's time to
    live (its own barrier, then the lessor): all before a silent crash's election would even begin."""
    results = crashed_leaders[True]
    for f in milestones(results, "crash announced"):
        assert f.elected is not None and f.committed is not None and f.read is not None and f.lease is not None
        assert f.committed - f.elected <= ROUND, f
        assert f.read - f.elected <= ROUND + 2 * MAX_LATENCY, f
        assert f.lease - f.read <= 2 * MAX_LATENCY + HEARTBEAT, f
        assert f.lease < 100, f  # the minimum election timeout
    assert max(c for r in results for c in r.audit.first_commits) <= ROUND


def test_false_reports_to_a_minority_never_depose_a_leader_a_quorum_hears() -> None:
    """Each follower of a five-member cluster in turn, and then two at once, is told falsely that its live
    leader is gone: every one of those meets a leader the audit says holds a quorum (it counts a follower
    told falsely as not hearing the leader for a whole window, so the reports are a window apart), and none
    deposes it."""
    faults = tuple(Fault(400 + 300 * i, "false_gone_leader", (i,)) for i in range(4))
    faults += (Fault(1600, "false_gone_leader", (0,)), Fault(1602, "false_gone_leader", (1,)))
    res = passing(Schedule(3, nodes=5, faults=faults, link=LinkFaults(max_latency=MAX_LATENCY), duration=1900,
                           announce=True, stable_leader=True))
    assert res.stats["false_reports"] == len(faults)
    assert res.stats["gone_reports"] == len(faults)
    assert res.stats["extra_changes"] == 0 and res.stats["elections"] == 1


def test_a_false_report_to_every_follower_is_safe() -> None:
    """Told by all its followers' transports that it is gone, a live leader may lose office (as far as they
    know, no quorum hears it any more), but every invariant holds and the cluster recovers."""
    faults = tuple(Fault(400 + 200 * i, "false_gone_leader", (j,)) for i in range(3) for j in range(4))
    res = passing(Schedule(7, nodes=5, faults=faults, link=LinkFaults(max_latency=MAX_LATENCY), duration=1200,
                           announce=True))
    assert res.stats["gone_reports"] == len(faults)


def test_partitions_and_resets_are_never_announced() -> None:
    """An isolated leader and a reset connection to a live one: the probe is not refused, nobody is told
    anything, and the isolated leader is replaced only after an election timeout."""
    faults = (Fault(400, "reset", (0, 1)), Fault(400, "reset", (1, 0)), Fault(700, "isolate_leader"),
              Fault(1200, "heal"), Fault(1500, "crash", (0,)), Fault(1500, "isolate", (0,)))
    res = passing(Schedule(5, nodes=3, faults=faults, link=LinkFaults(max_latency=MAX_LATENCY), duration=1800,
                           announce=True, stable_leader=True))
    assert res.stats["gone_reports"] == 0  # the crashed member was cut off first: its peers' probes time out
    (isolated,) = res.audit.failovers
    assert isolated.kind == "isolated" and isolated.elected is not None and isolated.elected >= 100


@settings(max_examples=4, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(failover_schedules(max_faults=6, duration=1000))
def test_drawn_failover_schedules_pass(schedule: Schedule) -> None:
    note(repr(schedule))
    passing(schedule)


def test_a_restarted_member_is_not_reported_gone() -> None:
    """Restarted before its peers' probes reach its port, a crashed leader is found serving: no report."""
    faults = (Fault(500, "crash_leader"), Fault(501, "restart_all"))
    res = passing(replace(leader_crashes(4, True), faults=faults, link=LinkFaults(min_latency=5, max_latency=6),
                          duration=900))
    assert res.stats["gone_reports"] == 0
