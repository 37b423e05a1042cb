"""RaftLog: matching, conflict handling, commit cursor, storage + unstable stitching."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.core.log import RaftLog
from raftkv.core.storage import MemoryStorage
from raftkv.core.types import CompactedError, ConfState, Entry, HardState, SnapshotMeta


def ents(*terms: int, start: int = 1) -> list[Entry]:
    return [Entry(term=t, index=start + i, data=b"%d" % (start + i)) for i, t in enumerate(terms)]


def new_log(stable: list[Entry] | None = None, committed: int = 0) -> RaftLog:
    s = MemoryStorage()
    if stable:
        s.append(stable)
        s.set_hard_state(HardState(term=stable[-1].term, commit=committed))
    return RaftLog(s, committed, committed)


def terms(log: RaftLog) -> list[int]:
    return [e.term for e in log.all_entries()]


def test_append_matching_prefix_keeps_log() -> None:
    log = new_log(ents(1, 1, 2))
    assert log.maybe_append(1, 1, 0, ents(1, 2, start=2)) == 3
    assert terms(log) == [1, 1, 2] and not log.unstable.entries


def test_conflict_truncates_from_first_mismatch_only() -> None:
    log = new_log(ents(1, 1, 2, 2))
    assert log.maybe_append(2, 1, 0, ents(3, start=3)) == 3
    assert terms(log) == [1, 1, 3]


def test_mismatched_predecessor_rejects() -> None:
    log = new_log(ents(1, 1, 2))
    assert log.maybe_append(3, 3, 0, ents(3, start=4)) is None
    assert log.maybe_append(5, 2, 0, []) is None  # beyond the end


def test_truncating_committed_entry_is_an_assertion() -> None:
    log = new_log(ents(1, 1, 2), committed=3)
    with pytest.raises(AssertionError):
        log.maybe_append(2, 1, 3, ents(3, start=3))


def test_commit_never_goes_back_and_is_bounded_by_append() -> None:
    log = new_log(ents(1, 1, 1, 1))
    log.maybe_append(1, 1, 10, ents(1, start=2))
    assert log.committed == 2  # bounded by what this APP proves (index 2), not by the leader's 10
    log.maybe_append(0, 0, 1, [])
    assert log.committed == 2


def test_find_conflict_by_term() -> None:
    # Raft paper figure 7 style: our terms at indexes 1..7.
    log = new_log(ents(1, 1, 1, 4, 4, 5, 5))
    assert log.find_conflict_by_term(7, 4) == (5, 4)
    assert log.find_conflict_by_term(7, 2) == (3, 1)
    assert log.find_conflict_by_term(7, 9) == (7, 5)
    assert log.find_conflict_by_term(2, 0) == (0, 0)


def test_entries_span_storage_and_unstable_with_bounds() -> None:
    log = new_log(ents(1, 1, 1))
    log.append(ents(2, 2, start=4))
    assert [e.index for e in log.entries(2)] == [2, 3, 4, 5]
    assert [e.index for e in log.entries(2, max_count=2)] == [2, 3]
    one = Entry(1, 1, data=b"1").size()
    assert [e.index for e in log.entries(2, max_bytes=one * 3)] == [2, 3, 4]
    assert [e.index for e in log.entries(2, max_bytes=1)] == [2]  # always at least one


def test_compacted_ranges_raise() -> None:
    s = MemoryStorage()
    s.append(ents(1, 1, 1, 1))
    s.set_hard_state(HardState(term=1, commit=4))
    s.compact(2, ConfState(frozenset({1})))
    log = RaftLog(s, 4, 4)
    assert log.first_index() == 3 and log.term(2) == 1
    with pytest.raises(CompactedError):
        log.term(1)
    with pytest.raises(CompactedError):
        log.entries(2)


def test_restore_from_snapshot() -> None:
    log = new_log(ents(1, 1), committed=1)
    log.restore(SnapshotMeta(index=10, term=3))
    assert (log.first_index(), log.last_index(), log.committed, log.term(10)) == (11, 10, 10, 3)
    assert log.next_committed_entries() == []  # nothing to apply until the snapshot is installed


def test_committed_entries_only_up_to_stable() -> None:
    log = new_log(ents(1, 1))
    log.append(ents(1, start=3))
    log.commit_to(3)
    assert [e.index for e in log.next_committed_entries()] == [1, 2]
    log.storage.append(log.unstable.entries)  # type: ignore[attr-defined]  # what the driver does
    log.stable_to(3, 1)
    assert [e.index for e in log.next_committed_entries()] == [1, 2, 3]


LEADER = ents(1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 4, 5)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 11), st.integers(0, 4), st.integers(0, 12)), max_size=30))
def test_stale_duplicated_and_reordered_appends_never_erase_committed(
    apps: list[tuple[int, int, int]],
) -> None:
    """Deliver arbitrary APPs cut from one leader's log, in any order and repeated: the follower's log stays a
    prefix of the leader's, commit never goes back, and nothing committed disappears."""
    log = new_log()
    for prev, count, leader_commit in apps:
        batch = LEADER[prev : prev + count]
        prev_term = LEADER[prev - 1].term if prev else 0
        before_commit = log.committed
        committed_before = log.all_entries()[:before_commit]
        log.maybe_append(prev, prev_term, leader_commit, batch)
        assert log.committed >= before_commit
        assert log.all_entries()[:before_commit] == committed_before
        assert log.all_entries() == LEADER[: log.last_index()]
        indexes = [e.index for e in log.all_entries()]
        assert indexes == list(range(1, len(indexes) + 1))
