"""Majority math against naive definitions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from raftkv.core.quorum import VoteResult, committed_index, quorum_size, vote_result

voter_sets = st.sets(st.integers(1, 9), min_size=1, max_size=7)


def naive_committed(voters: set[int], match: dict[int, int]) -> int:
    """The largest index i such that a majority of voters have match >= i."""
    candidates = {0} | {match.get(v, 0) for v in voters}
    return max(i for i in candidates if sum(1 for v in voters if match.get(v, 0) >= i) * 2 > len(voters))


@given(voter_sets, st.dictionaries(st.integers(1, 12), st.integers(0, 50)))
def test_committed_index_matches_naive(voters: set[int], match: dict[int, int]) -> None:
    assert committed_index(voters, match) == naive_committed(voters, match)


@given(voter_sets, st.dictionaries(st.integers(1, 12), st.booleans()))
def test_vote_result_matches_naive(voters: set[int], votes: dict[int, bool]) -> None:
    yes = sum(1 for v in voters if votes.get(v) is True)
    no = sum(1 for v in voters if votes.get(v) is False)
    majority = len(voters) // 2 + 1
    expected = VoteResult.WON if yes >= majority else VoteResult.LOST if no > len(voters) - majority else VoteResult.PENDING
    assert vote_result(voters, votes) == expected


def test_non_voters_never_count() -> None:
    assert vote_result({1, 2, 3}, {1: True, 4: True, 5: True}) == VoteResult.PENDING
    assert committed_index({1, 2, 3}, {1: 9, 4: 9, 5: 9}) == 0


def test_sizes() -> None:
    assert [quorum_size(range(n)) for n in range(1, 7)] == [1, 2, 2, 3, 3, 4]
    assert committed_index(set(), {1: 5}) == 0
