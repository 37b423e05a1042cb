"""The registration plan, driven with a fake clock and scripted outcomes: no I/O, no sleeping."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.client.errors import LeaseNotFound, Unavailable
from raftkv.discovery import lifecycle as lc


class Script:
    """Drives a plan: ``answer(step)`` decides each outcome; Wait advances the fake clock."""

    def __init__(self, life_factory: Callable[[Callable[[], float]], lc.Lifecycle]) -> None:
        self.now = 0.0
        self.life = life_factory(lambda: self.now)
        self.plan = self.life.run()
        self.steps: list[lc.Step] = []
        self.stop_at = float("inf")

    def run(self, answer: Callable[[lc.Step], lc.Outcome], until: float) -> None:
        self.stop_at = until
        outcome: lc.Outcome = None
        while True:
            try:
                step = self.plan.send(outcome)
            except StopIteration:
                return
            self.steps.append(step)
            if isinstance(step, lc.Wait):
                if self.now + step.seconds >= self.stop_at:
                    self.now = max(self.now, self.stop_at)
                    outcome = True
                else:
                    self.now += step.seconds
                    outcome = False
            else:
                outcome = answer(step)

    def kinds(self) -> list[str]:
        return [type(s).__name__ for s in self.steps if not isinstance(s, lc.Wait)]


def plain(ttl: int = 6) -> Callable[[Callable[[], float]], lc.Lifecycle]:
    return lambda clock: lc.Lifecycle("/services/s/i", b"v", ttl, clock=clock)


def healthy_registry(step: lc.Step) -> lc.Outcome:
    if isinstance(step, lc.Grant):
        return 42
    if isinstance(step, lc.KeepAlive):
        return 6
    return None


def test_grants_puts_refreshes_every_third_of_the_ttl_then_revokes_first() -> None:
    s = Script(plain())
    s.run(healthy_registry, until=7.0)
    assert s.kinds() == ["Grant", "Put", "KeepAlive", "KeepAlive", "KeepAlive", "Revoke"]
    assert s.steps[1] == lc.Put("/services/s/i", b"v", 42)
    assert s.life.state is lc.State.STOPPED and s.life.registrations == 1


def test_a_lost_lease_is_replaced_and_the_key_written_again() -> None:
    s = Script(plain())
    leases = iter([1, 2])

    def answer(step: lc.Step) -> lc.Outcome:
        if isinstance(step, lc.Grant):
            return next(leases)
        if isinstance(step, lc.KeepAlive):
            return LeaseNotFound("gone") if step.lease == 1 else 6
        return None

    s.run(answer, until=5.0)
    assert s.kinds()[:5] == ["Grant", "Put", "KeepAlive", "Grant", "Put"]
    assert s.steps[-2] == lc.Revoke(2) or lc.Revoke(2) in s.steps
    assert s.life.leases_lost == 1 and s.life.registrations == 2


def test_an_unreachable_registry_is_retried_with_backoff_and_state_says_so() -> None:
    s = Script(plain())
    down_until = 3.0

    def answer(step: lc.Step) -> lc.Outcome:
        if s.now < down_until:
            return Unavailable("down")
        return healthy_registry(step)

    s.run(answer, until=2.9)
    assert s.life.state is lc.State.STOPPED and s.life.registrations == 0
    waits = [w.seconds for w in s.steps if isinstance(w, lc.Wait)]
    assert waits[:4] == [0.1, 0.2, 0.4, 0.8] and max(waits) <= 1.0  # capped at half a refresh interval
    s2 = Script(plain())
    s2.run(lambda st: answer(st) if s2.now < down_until else healthy_registry(st), until=6.0)
    assert s2.life.registrations == 1


def test_a_failed_refresh_is_retried_sooner_than_the_next_interval() -> None:
    s = Script(plain())
    fails = iter([True, False, False, False])

    def answer(step: lc.Step) -> lc.Outcome:
        if isinstance(step, lc.KeepAlive) and next(fails):
            return Unavailable("partition")
        return healthy_registry(step)

    s.run(answer, until=4.5)
    refresh_times = []
    now = 0.0
    for step in s.steps:
        if isinstance(step, lc.Wait):
            now += step.seconds
        if isinstance(step, lc.KeepAlive):
            refresh_times.append(round(now, 3))
    assert refresh_times[:2] == [2.0, 3.0]  # TTL/3, then half of it after the failure


def gated(rise: int, fall: int) -> Callable[[Callable[[], float]], lc.Lifecycle]:
    return lambda clock: lc.Lifecycle("/services/s/i", b"v", 6, lc.HealthGate(rise, fall), 1.0, clock)


def test_health_gating_registers_after_rise_successes_and_withdraws_after_fall_failures() -> None:
    s = Script(gated(rise=2, fall=3))
    health = {0: True, 1: True, 2: False, 3: True, 4: False, 5: False, 6: False, 7: True, 8: True}

    def answer(step: lc.Step) -> lc.Outcome:
        if isinstance(step, lc.Probe):
            return health.get(int(s.now), True)
        return healthy_registry(step)

    s.run(answer, until=9.5)
    writes = [(type(st).__name__) for st in s.steps if isinstance(st, (lc.Put, lc.Delete))]
    assert writes == ["Put", "Delete", "Put"]  # the single failure at t=2 is damped away
    assert s.life.registrations == 2


@given(st.lists(st.booleans(), max_size=60), st.integers(1, 4), st.integers(1, 4))
def test_gate_flips_only_after_rise_or_fall_agreeing_results(results: list[bool], rise: int, fall: int) -> None:
    gate = lc.HealthGate(rise, fall)
    history: list[bool] = []
    for n, ok in enumerate(results):
        was = gate.passing
        changed = gate.observe(ok, float(n))
        history.append(ok)
        assert changed == (gate.passing != was)
        if changed:
            need = rise if gate.passing else fall
            assert history[-need:] == [gate.passing] * need


verdicts = st.sampled_from(list(lc.Verdict))


@given(st.lists(st.tuples(verdicts, st.floats(0.01, 5.0)), max_size=80), st.integers(1, 4), st.integers(1, 4),
       st.floats(1.0, 20.0))
def test_unknown_keeps_the_state_until_unknown_after_without_an_answer(
        probes: list[tuple[lc.Verdict, float]], rise: int, fall: int, unknown_after: float) -> None:
    """UNKNOWN never counts toward ``fall`` and never passes an instance; a passing gate goes critical for
    silence only once no probe was answered for ``unknown_after`` s. Answers alone follow the rise/fall rule."""
    gate = lc.HealthGate(rise, fall, unknown_after)
    now, answered = 0.0, 0.0
    answers: list[bool] = []  # answered verdicts since the last change, newest last
    for verdict, gap in probes:
        now += gap
        was = gate.passing
        changed = gate.observe(verdict, now)
        assert changed == (gate.passing != was)
        if verdict is lc.Verdict.UNKNOWN:
            assert not (changed and gate.passing)  # silence never passes an instance
            if changed:
                assert now - answered >= unknown_after and "no answer" in gate.reason
            elif was:
                assert now - answered < unknown_after
            if not was:
                answers.clear()  # an unanswered probe breaks a rise streak
            continue
        answered = now
        answers.append(verdict is lc.Verdict.PASS)
        if changed:
            need = rise if gate.passing else fall
            assert answers[-need:] == [gate.passing] * need
            answers.clear()
        elif verdict is lc.Verdict.PASS if was else verdict is lc.Verdict.FAIL:
            answers.clear()  # an answer agreeing with the state clears the streak


def test_probes_that_time_out_do_not_withdraw_until_unknown_after_but_a_hung_instance_does() -> None:
    s = Script(lambda clock: lc.Lifecycle("/services/s/i", b"v", 6, lc.HealthGate(2, 2, 10.0), 1.0, clock))

    def answer(step: lc.Step) -> lc.Outcome:
        if isinstance(step, lc.Probe):
            # answers for 2 s, then silent for 5 s (a load spike), answers again, then hangs for good at 12 s
            return lc.Verdict.PASS if s.now < 2 or 7 <= s.now < 12 else lc.Verdict.UNKNOWN
        return healthy_registry(step)

    s.run(answer, until=22.5)
    now, writes = 0.0, []
    for step in s.steps:
        if isinstance(step, lc.Wait):
            now += step.seconds
        if isinstance(step, (lc.Put, lc.Delete)):
            writes.append((type(step).__name__, round(now, 3)))
    # Registered after two passes; the 5 s spike withdrew nothing; the hang withdrew once the last answer
    # (t=11) was 10 s old.
    assert writes == [("Put", 1.0), ("Delete", 21.0)]
    assert s.life.gate is not None and s.life.gate.reason == "no answer for 10s" and s.life.gate.unknowns >= 15


def test_a_callable_probe_may_say_none_for_no_answer() -> None:
    assert lc.Verdict.of(None) is lc.Verdict.UNKNOWN
    assert lc.Verdict.of(True) is lc.Verdict.PASS and lc.Verdict.of(False) is lc.Verdict.FAIL
    assert lc.Verdict.of(lc.Verdict.FAIL) is lc.Verdict.FAIL


def test_gate_thresholds_must_be_positive() -> None:
    with pytest.raises(ValueError):
        lc.HealthGate(0, 1)
    with pytest.raises(ValueError, match="unknown_after"):
        lc.HealthGate(1, 1, 0)
