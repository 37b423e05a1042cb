"""Candidates, ejection and readmission, panic mode and the retry budget: pure, with the time passed in."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from raftkv.discovery.budget import RetryBudget
from raftkv.discovery.ejection import OutlierConfig, OutlierDetector
from raftkv.discovery.endpoint import Health
from raftkv.discovery.policies import RoundRobin
from raftkv.discovery.pool import Outcome, Pool
from raftkv.discovery.record import Instance


def pool(n: int, **config: object) -> Pool:
    p = Pool(RoundRobin(random.Random(0)), OutlierConfig(**config))  # type: ignore[arg-type]
    p.update({f"i{k}": Instance(f"i{k}", f"10.0.0.{k}:1") for k in range(n)})
    return p


def call(p: Pool, now: float, outcome: Outcome, exclude: tuple[str, ...] = ()) -> str:
    e = p.pick(now, None, exclude)
    assert e is not None
    p.begin(e)
    p.end(e, now, outcome, now + 0.001)
    return e.id


def test_consecutive_failures_eject_and_the_ejection_grows_per_repeat_up_to_the_cap() -> None:
    d = OutlierDetector(OutlierConfig(consecutive_failures=2, base_ejection=10, max_ejection=25,
                                      max_ejection_percent=50, interval=1000))
    d.track(["a", "b"])
    assert not d.record("a", False, 0) and d.record("a", False, 0)
    assert d.is_ejected("a") and d.next_due() == 10
    d.sweep(10)
    assert not d.is_ejected("a")
    d.record("a", False, 11), d.record("a", False, 11)
    assert d.next_due() == 11 + 20  # second ejection: twice the base
    d.sweep(31)
    d.record("a", False, 32), d.record("a", False, 32)
    assert d.next_due() == 32 + 25  # third: capped


def test_at_most_the_ejection_percent_but_always_one() -> None:
    d = OutlierDetector(OutlierConfig(consecutive_failures=1, max_ejection_percent=10))
    d.track(["a", "b", "c"])
    assert d.record("a", False, 0)
    assert not d.record("b", False, 0)  # 10 % of 3 rounds down to 0, but one is always allowed
    assert d.ejected_count() == 1


def test_success_rate_and_failure_percentage_eject_per_interval() -> None:
    d = OutlierDetector(OutlierConfig(consecutive_failures=10**6, interval=10, minimum_hosts=5,
                                      request_volume=100, failure_volume=50, max_ejection_percent=50))
    ids = [f"i{k}" for k in range(6)]
    d.track(ids)
    for k, i in enumerate(ids):
        for n in range(100):
            d.record(i, not (k == 0 and n % 10 < 9) and not (k == 1 and n % 5 == 0), n / 100)
    assert d.sweep(10.0)
    assert d.is_ejected("i0")  # 10 % success: far below the mean, and above 85 % failures
    assert not d.is_ejected("i2")


def test_readmission_by_a_passing_health_check() -> None:
    p = pool(3, consecutive_failures=1, base_ejection=100, max_ejection_percent=50)
    e = p.endpoints["i0"]
    p.begin(e)
    p.end(e, 0.0, Outcome.FAILED, 0.0)
    assert p.detector.is_ejected("i0") and "i0" not in {call(p, 0.5, Outcome.OK) for _ in range(6)}
    p.set_health("i0", Health.NOT_SERVING, 1.0)
    p.set_health("i0", Health.SERVING, 2.0)
    assert not p.detector.is_ejected("i0")


def test_known_unusable_instances_get_no_call_and_ejection_panics_below_the_threshold() -> None:
    p = pool(4, consecutive_failures=1, max_ejection_percent=100)
    p.set_health("i0", Health.NOT_SERVING, 0.0)
    assert {call(p, 0.0, Outcome.OK) for _ in range(30)} == {"i1", "i2", "i3"}
    p.detector.record("i1", False, 0.0)
    p.detector.record("i2", False, 0.0)
    p._dirty = True
    # 1 healthy of 4 < 50 %: panic, ejections ignored, but the NOT_SERVING instance still left out.
    assert {call(p, 0.0, Outcome.OK) for _ in range(30)} == {"i1", "i2", "i3"} and p.panicking
    for i in ("i1", "i2", "i3"):
        p.set_health(i, Health.UNREACHABLE, 0.0)
    # Nothing usable: try everyone rather than fail for sure.
    assert len({call(p, 0.0, Outcome.OK) for _ in range(30)}) == 4


def test_a_refused_connection_backs_off_and_doubles() -> None:
    p = pool(2)
    e = p.endpoints["i0"]
    p.begin(e)
    p.end(e, 0.0, Outcome.NOT_CONNECTED, 0.0)
    assert e.down_until == 0.1 and {call(p, 0.05, Outcome.OK) for _ in range(10)} == {"i1"}
    p.begin(e)
    p.end(e, 0.2, Outcome.NOT_CONNECTED, 0.2)
    assert abs(e.down_until - 0.4) < 1e-9
    assert "i0" in Counter(call(p, 0.5, Outcome.OK) for _ in range(10))


def test_exclude_skips_instances_already_tried() -> None:
    p = pool(3)
    assert {call(p, 0.0, Outcome.OK, exclude=("i0", "i1")) for _ in range(5)} == {"i2"}
    assert p.pick(0.0, None, ("i0", "i1", "i2")) is None


def test_replaced_instance_gets_fresh_statistics() -> None:
    p = pool(1)
    old = p.endpoints["i0"]
    _, removed = p.update({"i0": Instance("i0", "10.0.0.9:1")})
    assert removed == [old] and p.endpoints["i0"] is not old


@given(st.lists(st.tuples(st.floats(0, 100), st.booleans()), max_size=300), st.floats(0, 1), st.integers(0, 20))
def test_budget_never_allows_more_than_ratio_plus_floor_in_any_window(ops: list[tuple[float, bool]], ratio: float,
                                                                      floor: int) -> None:
    budget = RetryBudget(ratio=ratio, min_per_second=floor / 10, window=10)
    events: list[tuple[float, str]] = []
    for at, is_retry in sorted(ops):
        if is_retry:
            if budget.withdraw(at):
                events.append((at, "retry"))
        else:
            budget.deposit(at)
            events.append((at, "call"))
    for start, _ in events:  # every window of buckets [s, s+10) obeys the bound
        import math
        lo = math.floor(start)
        calls = sum(1 for t, k in events if lo <= t < lo + 10 and k == "call")
        retries = sum(1 for t, k in events if lo <= t < lo + 10 and k == "retry")
        assert retries <= ratio * calls + floor + 1e-9 + ratio * len(events)  # deposits in the window only


def test_budget_floor_and_ratio() -> None:
    budget = RetryBudget(ratio=0.2, min_per_second=0.1, window=10)
    assert budget.withdraw(0.0) and not budget.withdraw(0.0)  # the floor: 1 retry per 10 s window
    for _ in range(10):
        budget.deposit(1.0)
    assert budget.withdraw(1.0) and budget.withdraw(1.0) and not budget.withdraw(1.0)  # + 20 % of 10
    assert budget.withdraw(12.0)  # the window slid past all of it


def test_the_end_of_the_last_call_to_an_instance_that_left_says_so_once() -> None:
    """A channel closes a retired instance's connection when ``end`` says its last call ended: never while
    calls are in flight to it, never for an instance still in the pool."""
    p = pool(2)
    leaving, staying = p.endpoints["i0"], p.endpoints["i1"]
    for endpoint in (leaving, leaving, staying):
        p.begin(endpoint)
    p.update({"i1": staying.instance})
    assert [p.end(leaving, 0.0, Outcome.OK, 0.1), p.end(leaving, 0.0, Outcome.ABANDONED, 0.1)] == [False, True]
    assert p.end(staying, 0.0, Outcome.OK, 0.1) is False
