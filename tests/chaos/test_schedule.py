"""The nemesis's plan: the faults the benchmark promises, never all instances out at once."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.discovery.chaos.schedule import Fault, plan


def impaired_at(events: list, t: float) -> set[int]:
    out: set[int] = set()
    for e in events:
        if e.at > t:
            break
        if e.fault.impairs:
            out.add(e.target)
        elif e.fault in (Fault.RESTART, Fault.CONT, Fault.SERVING):
            out.discard(e.target)
    return out


def test_a_120_s_run_has_every_fault_at_its_period() -> None:
    events = plan(120)
    kills = [e.at for e in events if e.fault is Fault.KILL]
    assert kills == [5.0 * k for k in range(1, 24)]  # every 5 s, the last one restarted before the end
    assert [e.at for e in events if e.fault is Fault.LEADER_KILL] == [10, 30, 50, 70, 90, 110]
    assert len([e for e in events if e.fault is Fault.STOP]) == 6
    assert len([e for e in events if e.fault is Fault.NOT_SERVING]) == 6
    assert len([e for e in events if e.fault is Fault.SIDECAR_KILL]) == 6
    restarts = {e.at for e in events if e.fault is Fault.RESTART}
    assert all(k + 3.0 in restarts for k in kills)


@settings(deadline=None, max_examples=60)
@given(st.floats(min_value=1, max_value=400), st.integers(min_value=3, max_value=6))
def test_one_instance_always_untouched_and_every_fault_ends(duration: float, instances: int) -> None:
    events = plan(duration, instances)
    assert events == sorted(events)
    for e in events:
        assert len(impaired_at(events, e.at)) < instances
    assert impaired_at(events, duration) == set()  # the run ends with every instance back


def test_faults_on_one_instance_do_not_overlap() -> None:
    events = plan(400)
    state: dict[int, Fault] = {}
    for e in events:
        if e.fault.impairs:
            assert e.target not in state, (e, state)
            state[e.target] = e.fault
        elif e.target in state and e.fault in (Fault.RESTART, Fault.CONT, Fault.SERVING):
            del state[e.target]
