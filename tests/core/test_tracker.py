"""Progress state machine and the inflight window."""

from __future__ import annotations

import pytest

from raftkv.core.tracker import Inflights, Progress, ProgressState


def progress(match: int = 0, next_index: int = 1, window: int = 3) -> Progress:
    return Progress(match=match, next=next_index, inflights=Inflights(window))


def test_inflights_bounded_by_count_and_bytes() -> None:
    w = Inflights(3, max_bytes=100)
    w.add(5, 10)
    w.add(7, 10)
    assert not w.full()
    w.add(9, 10)
    assert w.full()
    w.free_le(7)
    assert w.count() == 1 and not w.full()
    w.add(10, 95)
    assert w.full()  # byte bound
    with pytest.raises(AssertionError):
        w.add(11, 1)
    w.free_le(100)
    assert w.count() == 0


def test_probe_sends_one_message_at_a_time() -> None:
    pr = progress(match=3, next_index=4)
    assert not pr.is_paused()
    pr.sent_entries(2, 40)
    assert pr.is_paused() and pr.next == 4  # probe does not advance next optimistically
    assert pr.maybe_update(5)
    assert not pr.is_paused() and pr.next == 6


def test_replicate_pipelines_until_window_full() -> None:
    pr = progress(match=3, next_index=4)
    pr.become_replicate()
    for _ in range(3):
        assert not pr.is_paused()
        pr.sent_entries(1, 10)
    assert pr.next == 7 and pr.is_paused()
    pr.maybe_update(4)
    pr.inflights.free_le(4)
    assert pr.inflights.count() == 2


def test_stale_rejections_are_ignored() -> None:
    pr = progress(match=5, next_index=10)
    assert not pr.maybe_decrease_to(7, 0)  # probe: only the answer to the last probe (next-1 = 9) counts
    assert pr.maybe_decrease_to(9, 6)
    assert pr.next == 7
    assert pr.maybe_decrease_to(6, 0)
    assert pr.next == 6  # never below match + 1
    pr.become_replicate()
    assert not pr.maybe_decrease_to(5, 0)  # replicate: rejection at or below match is stale


def test_snapshot_state_pauses_and_resumes_after_snapshot() -> None:
    pr = progress(match=2, next_index=3)
    pr.become_snapshot(20)
    assert pr.is_paused() and pr.state == ProgressState.SNAPSHOT
    pr.become_probe()
    assert pr.next == 21 and pr.pending_snapshot == 0


def test_match_below_next_invariant() -> None:
    with pytest.raises(AssertionError):
        progress(match=4, next_index=4)
