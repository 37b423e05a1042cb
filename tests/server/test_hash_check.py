"""Whom the leader's hash check blames: the members outside a majority, or everyone when none agrees."""

from __future__ import annotations

from raftkv.server.hash_check import blame


def test_agreeing_members_blame_nobody() -> None:
    assert blame({1: 7, 2: 7, 3: 7}, 3) == []
    assert blame({1: 7}, 3) == []  # nothing to compare with


def test_the_member_outside_the_majority_is_blamed() -> None:
    assert blame({1: 7, 2: 7, 3: 9}, 3) == [3]
    assert blame({1: 7, 2: 7, 3: 7, 4: 9, 5: 8}, 5) == [4, 5]


def test_without_a_majority_every_compared_member_is_blamed() -> None:
    """Two answers of three that differ (the third did not answer): nobody can tell which is right."""
    assert blame({1: 7, 2: 9}, 3) == [1, 2]
    assert blame({1: 7, 2: 7, 3: 9, 4: 9}, 5) == [1, 2, 3, 4]
