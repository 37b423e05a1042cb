"""One simulated run from a schedule to a verdict: fault phase, heal, liveness, convergence, final checks."""

from __future__ import annotations

from dataclasses import dataclass, field

from raftkv.sim.cluster import Cluster, SimOptions
from raftkv.sim.liveness import await_commit, await_convergence, run_until
from raftkv.sim.schedule import Schedule

LIVENESS_BOUND = 4000  # 400 ticks: ~20 election timeouts to elect a leader and commit after healing
CONVERGENCE_BOUND = 6000


@dataclass(slots=True)
class RunResult:
    schedule: Schedule
    error: str | None
    trace_hash: str
    end_time: int
    events: int
    members: tuple[int, ...] = ()
    stats: dict[str, int] = field(default_factory=dict)
    recent: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        s = " ".join(f"{k}={v}" for k, v in self.stats.items())
        return f"seed={self.schedule.seed} {'ok' if self.ok else 'FAIL'} t={self.end_time} events={self.events} {s}"


def run_schedule(schedule: Schedule, options: SimOptions = SimOptions()) -> RunResult:
    """Run ``schedule``; any broken invariant, failed liveness or assertion in the driver is the verdict."""
    cluster = Cluster(schedule, options)
    error: str | None = None
    try:
        run_until(cluster, schedule.duration)
        cluster.heal_all()
        index = await_commit(cluster, LIVENESS_BOUND)
        await_convergence(cluster, index, CONVERGENCE_BOUND)
        cluster.workload.check_not_lost(cluster.live_members())
    except AssertionError as exc:  # InvariantViolation, LivenessFailure, or an assert in core or driver
        error = f"{type(exc).__name__}: {exc}"
    w = cluster.workload.stats
    stats = {
        "elections": cluster.checker.elections,
        "committed": cluster.checker.max_committed,
        "writes_ok": w.writes_ok,
        "reads_ok": w.reads_ok,
        "failed": w.failed,
        "info": w.indeterminate,
        "members": len(cluster.members()),
    }
    q = cluster.queue
    recent = q.recent[-options.keep_trace :] if options.keep_trace else []
    return RunResult(schedule, error, q.trace_hash(), q.now, q.events_run, tuple(cluster.members()), stats, recent)
