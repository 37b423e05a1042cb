"""The nemesis's plan: which fault hits what when, as a pure function of the run's length.

Every 5 s an instance is SIGKILLed and restarted 3 s later (the instances take turns); every 20 s one
instance is SIGSTOPped for 2.5 s and another turned NOT_SERVING (and failing its calls, as an instance
whose own backend is down does) for 3 s; every 20 s the raftkv leader is SIGKILLed and restarted 5 s later;
every 20 s a throwaway registration's process is SIGKILLed, to time how long its key outlives it.

Faults on instances never overlap on the same instance and always leave one instance untouched, counting
the time an instance takes to be back after its fault ends: the benchmark measures how well each balancer
routes around failures, not what it does with no instance left. The same plan drives every target in one run,
since all of them share the instances.
"""

from __future__ import annotations

import dataclasses
import enum


class Fault(enum.Enum):
    KILL = "kill"                  # SIGKILL an instance
    RESTART = "restart"            # start it again on the same port
    STOP = "stop"                  # SIGSTOP
    CONT = "cont"                  # SIGCONT
    NOT_SERVING = "not-serving"    # health NOT_SERVING and calls fail UNAVAILABLE
    SERVING = "serving"
    LEADER_KILL = "leader-kill"    # SIGKILL the raftkv leader
    LEADER_RESTART = "leader-restart"
    SIDECAR_KILL = "sidecar-kill"  # SIGKILL a registration process: its key must go within TTL + 1 s

    @property
    def impairs(self) -> bool:
        return self in (Fault.KILL, Fault.STOP, Fault.NOT_SERVING)


#: The fault that ends each impairment, and after how long.
_ENDS = {Fault.KILL: (Fault.RESTART, 3.0), Fault.STOP: (Fault.CONT, 2.5), Fault.NOT_SERVING: (Fault.SERVING, 3.0),
         Fault.LEADER_KILL: (Fault.LEADER_RESTART, 5.0)}
#: How long an instance stays out after its fault ends: a restarted process must start, register and be
#: readmitted by the balancers (measured: more than 2 s on a loaded machine), a NOT_SERVING one's
#: registration comes back after its health gate's rise count (2 checks 1 s apart). Overlaps are judged with
#: these added, or "one instance untouched" is not true.
_RECOVERY = {Fault.KILL: 3.5, Fault.NOT_SERVING: 2.5, Fault.STOP: 0.0}
KILL_EVERY = 5.0
CYCLE = 20.0
#: Offsets in each 20 s cycle.
STOP_AT, NOT_SERVING_AT, LEADER_AT, SIDECAR_AT = 6.5, 16.0, 10.0, 2.0


@dataclasses.dataclass(frozen=True, order=True)
class Event:
    at: float
    fault: Fault = dataclasses.field(compare=False)
    #: Instance index (instance faults), else -1 (the leader, a sidecar: resolved when it happens).
    target: int = dataclasses.field(default=-1, compare=False)


def plan(duration: float, instances: int = 3) -> list[Event]:
    """The events of a run of ``duration`` seconds, sorted by time; faults that would not end before the
    run does are left out (the run ends with every instance back)."""
    assert instances >= 3, "three instances at least: one may be killed, one stopped, one must serve"
    events: list[Event] = []
    busy: list[tuple[float, float, int]] = []  # (start, end, instance) of impairments

    def add(at: float, fault: Fault, target: int = -1) -> None:
        end_fault, length = _ENDS.get(fault, (None, 0.0))
        if at + length >= duration:
            return
        events.append(Event(at, fault, target))
        if end_fault is not None:
            events.append(Event(at + length, end_fault, target))
        if fault.impairs:
            busy.append((at, at + length + _RECOVERY[fault], target))

    def free(at: float, fault: Fault, start: int) -> int | None:
        """The first instance from ``start`` on whose own faults (recovery included) leave the fault's window
        alone and such that, at every instant of the window plus its recovery, the other instances' faults
        (recovery included) leave one of them untouched. The victim's own next kill may fall in its
        recovery: it is the same instance out a little longer, never a second one."""
        end = at + _ENDS[fault][1] + _RECOVERY[fault]
        for k in range(instances):
            candidate = (start + k) % instances
            own = [(s, e) for s, e, i in busy if i == candidate]
            if any(s < at + _ENDS[fault][1] and at < e for s, e in own):
                continue
            others = [(s, e, i) for s, e, i in busy if i != candidate and s < end and at < e]
            instants = sorted({at, *(s for s, _, _ in others if s > at)})
            crowd = max((len({i for s, e, i in others if s <= t < e}) for t in instants), default=0)
            if crowd + 1 < instances:
                return candidate
        return None

    t, k = KILL_EVERY, 0
    while t < duration:
        add(t, Fault.KILL, k % instances)
        t, k = t + KILL_EVERY, k + 1
    cycle = 0
    while cycle * CYCLE < duration:
        base = cycle * CYCLE
        for offset, fault in ((STOP_AT, Fault.STOP), (NOT_SERVING_AT, Fault.NOT_SERVING)):
            # at its offset if an instance is free then, else at the next half second that has one
            for at in (base + offset + 0.5 * step for step in range(int(2 * CYCLE))):
                victim = free(at, fault, cycle + (fault is Fault.NOT_SERVING))
                if victim is not None:
                    add(at, fault, victim)
                    break
        add(base + LEADER_AT, Fault.LEADER_KILL)
        add(base + SIDECAR_AT, Fault.SIDECAR_KILL)
        cycle += 1
    return sorted(events)
