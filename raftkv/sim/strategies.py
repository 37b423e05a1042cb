"""Hypothesis strategies for schedules: explicit fault lists, so a failing run shrinks to a few faults.

Needs the `dev` extra (hypothesis); nothing else in the simulator imports this module.
"""

from __future__ import annotations

from hypothesis import strategies as st

from raftkv.sim.member import MemberKnobs
from raftkv.sim.network import LinkFaults
from raftkv.sim.schedule import ARG_RANGE, FAULT_ARITY, FAULT_KINDS, Fault, Schedule

DURATION = 1500
#: What a ``failover_schedules`` fault may be: the leader's and followers' process faults, resets and false
#: "gone" reports -- nothing that legitimately moves leadership while the leader keeps a quorum.
FAILOVER_KINDS = ("false_gone_leader", "false_gone", "reset", "crash_leader", "crash", "restart_all")


@st.composite
def faults(draw: st.DrawFn, duration: int = DURATION, kinds: tuple[str, ...] = FAULT_KINDS) -> Fault:
    kind = draw(st.sampled_from(kinds))
    args = tuple(draw(st.integers(0, ARG_RANGE - 1)) for _ in range(FAULT_ARITY[kind]))
    return Fault(draw(st.integers(0, duration)), kind, args)


@st.composite
def schedules(draw: st.DrawFn, max_faults: int = 12, duration: int = DURATION) -> Schedule:
    """A schedule whose simpler forms are: fewer faults, 3 nodes, a clean network, default knobs."""
    fs = sorted(draw(st.lists(faults(duration), max_size=max_faults)), key=lambda f: (f.at, f.kind, f.args))
    link = LinkFaults(
        max_latency=draw(st.sampled_from((6, 2, 15))),
        drop=draw(st.sampled_from((0.0, 0.02))),
        duplicate=draw(st.sampled_from((0.0, 0.02))),
    )
    knobs = MemberKnobs(
        max_entries_per_msg=draw(st.sampled_from((4096, 1))),
        fsync_latency=draw(st.sampled_from((2, 0, 10))),
        snapshot_count=draw(st.sampled_from((1_000_000, 5))),
        pre_vote=not draw(st.booleans()),
    )
    return Schedule(
        seed=draw(st.integers(0, 2**32 - 1)),
        nodes=draw(st.sampled_from((3, 5))),
        faults=tuple(fs),
        link=link,
        knobs=knobs,
        clients=draw(st.sampled_from((3, 1, 6))),
        duration=duration,
        announce=draw(st.booleans()),
    )


@st.composite
def failover_schedules(draw: st.DrawFn, max_faults: int = 6, duration: int = DURATION) -> Schedule:
    """A loss-free schedule with ``stable_leader``: announced or silent crashes, resets and false reports.
    Its simpler forms are: fewer faults, 3 nodes, announced crashes."""
    fs = draw(st.lists(faults(duration, FAILOVER_KINDS), max_size=max_faults))
    return Schedule(
        seed=draw(st.integers(0, 2**32 - 1)),
        nodes=draw(st.sampled_from((3, 5))),
        faults=tuple(sorted(fs, key=lambda f: (f.at, f.kind, f.args))),
        link=LinkFaults(max_latency=draw(st.sampled_from((6, 2, 15)))),
        clients=draw(st.sampled_from((3, 1))),
        duration=duration,
        announce=not draw(st.booleans()),
        stable_leader=True,
    )
