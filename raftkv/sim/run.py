"""One simulated run from a schedule to a verdict: fault phase, heal, liveness, convergence, final checks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from raftkv.sim.cluster import UNIT, Cluster, SimOptions
from raftkv.sim.leadership import AuditStats
from raftkv.sim.liveness import await_commit, await_convergence
from raftkv.sim.loop import SimulationStalled, finish
from raftkv.sim.schedule import Schedule

LIVENESS_BOUND = 40.0  # seconds (400 ticks): ~20 election timeouts to elect a leader and commit after healing
CONVERGENCE_BOUND = 60.0


@dataclass(slots=True)
class RunResult:
    schedule: Schedule
    error: str | None
    trace_hash: str
    end_time: float
    events: int
    members: tuple[str, ...] = ()
    stats: dict[str, int] = field(default_factory=dict)
    recent: list[str] = field(default_factory=list)
    #: Leader changes, failovers and first-term commits, as the leadership audit saw them.
    audit: AuditStats = field(default_factory=AuditStats)

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        s = " ".join(f"{k}={v}" for k, v in self.stats.items())
        return f"seed={self.schedule.seed} {'ok' if self.ok else 'FAIL'} t={self.end_time:.1f}s steps={self.events} {s}"


async def _scenario(cluster: Cluster) -> None:
    cluster.boot()
    await asyncio.sleep(cluster.schedule.duration * UNIT)
    cluster.heal_all()
    cluster.workload.running = False  # the clients finish what they are doing, then stop
    revision = await await_commit(cluster, LIVENESS_BOUND)
    await await_convergence(cluster, revision, CONVERGENCE_BOUND)


def run_schedule(schedule: Schedule, options: SimOptions = SimOptions()) -> RunResult:
    """Run ``schedule``; any broken invariant, failed liveness or assertion in the node is the verdict."""
    cluster = Cluster(schedule, options)
    loop = cluster.loop
    error: str | None = None
    try:
        loop.run_until_complete(_scenario(cluster))
    except AssertionError as exc:  # LivenessFailure, or an assert in the scenario
        error = f"{type(exc).__name__}: {exc}"
    except SimulationStalled as exc:
        error = f"SimulationStalled: {exc}"
    except RuntimeError:
        pass  # stopped by a recorded failure
    if loop.failure is not None:
        error = loop.failure
    w, h = cluster.workload.stats, cluster.history.stats
    stats = {
        "elections": cluster.raft.elections,
        "committed": cluster.raft.max_committed,
        "revisions": h.revisions,
        "ok": w.ok,
        "failed": w.failed,
        "info": w.indeterminate,
        "reads": h.reads_checked,
        "lease_answers": h.lease_answers_checked,
        "watch_events": h.watch_events_checked,
        "members": len(cluster.current_members()),
        "gone_reports": cluster.network.gone_reports,
        "false_reports": cluster.audit.stats.false_reports,
        "extra_changes": len(cluster.audit.stats.extra),
    }
    recent = cluster.recent[-options.keep_trace :] if options.keep_trace else []
    members = tuple(m.name for m in cluster.current_members())
    result = RunResult(
        schedule, error, loop.trace_hash(), loop.time(), loop.steps, members, stats, recent, cluster.audit.stats
    )
    finish(loop, [life for member in cluster.members.values() for life in member.all_lives])
    return result
