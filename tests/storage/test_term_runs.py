"""The in-memory term runs answer exactly what the stored log would, through appends that overwrite."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv.core.types import Entry
from raftkv.storage.term_runs import MAX_RUNS, TermRuns


@st.composite
def appends(draw: st.DrawFn) -> list[tuple[int, list[int]]]:
    """(first index, term increments) per append; each lands inside or right after the log so far."""
    out, last = [], draw(st.integers(0, 5))
    for _ in range(draw(st.integers(1, 30))):
        first = draw(st.integers(max(1, last - 5), last + 1))
        steps = draw(st.lists(st.integers(0, 2), min_size=1, max_size=8))
        out.append((first, steps))
        last = first + len(steps) - 1
    return out


# Wall-clock limits measure the machine, not the code: on a loaded one they failed examples that pass.
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(appends())
def test_runs_match_the_log_they_describe(script: list[tuple[int, list[int]]]) -> None:
    log: dict[int, int] = {}  # index -> term, the model
    runs = TermRuns.empty_after(script[0][0] - 1)
    for first, steps in script:
        term = log.get(first - 1, 1)
        for index in [i for i in log if i >= first]:
            del log[index]
        entries = []
        for offset, step in enumerate(steps):
            term += step
            entries.append(Entry(term=term, index=first + offset))
            log[first + offset] = term
        runs = runs.after_append(entries)
        assert runs.last == max(log)
        assert len(runs.starts) <= MAX_RUNS
        for index in range(min(log) - 2, max(log) + 3):
            cached = runs.term(index)
            assert cached is None or cached == log[index], index
        assert runs.term(runs.last) == log[runs.last]  # the newest entry is always answered from memory


def test_old_runs_are_forgotten_beyond_the_bound() -> None:
    runs = TermRuns.empty_after(0)
    for i in range(1, MAX_RUNS + 11):
        runs = runs.after_append([Entry(term=i, index=i)])
    assert len(runs.starts) == MAX_RUNS
    assert runs.term(10) is None and runs.term(11) == 11 and runs.term(MAX_RUNS + 10) == MAX_RUNS + 10
