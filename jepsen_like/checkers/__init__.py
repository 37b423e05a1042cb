"""All checkers, run over one history: ``check_all(events)`` returns one verdict per checker."""

from __future__ import annotations

from collections.abc import Sequence

from jepsen_like.checkers import convergence, durability, lease, linearizable, recovery, revisions, truth, watch
from jepsen_like.checkers.result import Anomaly, CheckResult
from jepsen_like.history import Event, pair


def check_all(events: Sequence[Event], time_limit: float = 60.0) -> list[CheckResult]:
    """Run every checker; linearizability gets ``time_limit`` seconds before answering unknown."""
    ops = pair(events)
    committed = truth.committed(events, ops)
    return [
        linearizable.check(ops, time_limit=time_limit),
        revisions.check(ops),
        watch.check(events, committed),
        durability.check(events, ops),
        lease.check(events, ops, committed),
        convergence.check(events),
        recovery.check(events, ops),
    ]


def verdict(results: Sequence[CheckResult]) -> bool:
    """Valid only if no checker found an anomaly and none was undecided."""
    return all(r.valid is True for r in results)


__all__ = ["check_all", "verdict", "Anomaly", "CheckResult"]
