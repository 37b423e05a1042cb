"""After every fault window the cluster serves again.

Each window's end (the nemesis ``stop``: network healed, members resumed and restarted) must be followed,
within ``RECOVERY_S``, by a client operation that succeeded and was invoked after it -- or, once the traffic
has stopped, by the final reads. The faults that take the quorum away (``kill-majority``,
``pause-majority``, ``no-majority``) are what this checks: nothing can be written during them, and the
cluster must elect a leader and serve on its own once they end. The stats give the recovery time of each
kind of fault (seconds from the heal to the first success).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from jepsen_like.checkers.result import CheckResult
from jepsen_like.history import NEMESIS, OK, Event, Op, records

RECOVERY_S = 30.0
_NS = 1_000_000_000


def check(events: Sequence[Event], ops: Sequence[Op]) -> CheckResult:
    res = CheckResult("recovery", True)
    stops = [e for e in events if e.process == NEMESIS and e.f == "stop"]
    if not stops:
        res.stats["windows"] = 0
        return res
    t0 = min(e.time for e in events if e.time)
    successes = sorted((o.call, o.ret) for o in ops if o.type == OK)
    finals = sorted(e.time for e in records(events, "final-read"))
    end = max(e.time for e in events)
    recovered: dict[str, list[float]] = defaultdict(list)
    for stop in stops:
        fault = stop.value.get("fault") if isinstance(stop.value, dict) else str(stop.value)
        after = [ret for call, ret in successes if call >= stop.time] + [t for t in finals if t >= stop.time]
        first = min(after, default=None)
        at = (stop.time - t0) / _NS
        if first is None:
            if (end - stop.time) / _NS > RECOVERY_S:
                res.add("no-recovery", f"nothing succeeded after the {fault} window ended at {at:.1f} s",
                        [{"fault": fault, "time": stop.time}])
            continue
        seconds = (first - stop.time) / _NS
        recovered[str(fault)].append(seconds)
        if seconds > RECOVERY_S:
            res.add("slow-recovery", f"the first success after the {fault} window ended at {at:.1f} s came "
                    f"{seconds:.1f} s later", [{"fault": fault, "time": stop.time}])
    res.stats["windows"] = len(stops)
    res.stats["recovery_s"] = {f: {"max": round(max(v), 2), "median": round(sorted(v)[len(v) // 2], 2),
                                   "windows": len(v)} for f, v in sorted(recovered.items())}
    return res
