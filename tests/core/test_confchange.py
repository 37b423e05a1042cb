"""One-at-a-time membership change validation and application."""

from __future__ import annotations

import pytest

from raftkv.core import confchange
from raftkv.core.types import ConfChange, ConfChangeType, ConfState

ADD, LEARN, REMOVE = ConfChangeType.ADD_VOTER, ConfChangeType.ADD_LEARNER, ConfChangeType.REMOVE_NODE
CS = ConfState(frozenset({1, 2, 3}), frozenset({4}))


@pytest.mark.parametrize(
    ("change", "after"),
    [
        (ConfChange(ADD, 5), ConfState(frozenset({1, 2, 3, 5}), frozenset({4}))),
        (ConfChange(ADD, 4), ConfState(frozenset({1, 2, 3, 4}), frozenset())),  # promotion
        (ConfChange(LEARN, 5), ConfState(frozenset({1, 2, 3}), frozenset({4, 5}))),
        (ConfChange(LEARN, 3), ConfState(frozenset({1, 2}), frozenset({3, 4}))),  # demotion
        (ConfChange(REMOVE, 2), ConfState(frozenset({1, 3}), frozenset({4}))),
        (ConfChange(REMOVE, 4), ConfState(frozenset({1, 2, 3}), frozenset())),
    ],
)
def test_valid_changes(change: ConfChange, after: ConfState) -> None:
    assert confchange.validate(CS, change) is None
    assert confchange.apply(CS, change) == after


@pytest.mark.parametrize(
    ("cs", "change", "reason"),
    [
        (CS, ConfChange(ADD, 1), "already a voter"),
        (CS, ConfChange(LEARN, 4), "already a learner"),
        (CS, ConfChange(REMOVE, 9), "not a member"),
        (CS, ConfChange(ADD, 0), "node id 0"),
        (ConfState(frozenset({1})), ConfChange(REMOVE, 1), "last voter"),
        (ConfState(frozenset({1})), ConfChange(LEARN, 1), "last voter"),
    ],
)
def test_refused_changes_leave_config_unchanged(cs: ConfState, change: ConfChange, reason: str) -> None:
    refusal = confchange.validate(cs, change)
    assert refusal is not None and reason in refusal
    assert confchange.apply(cs, change) == cs


def test_encoding_round_trip() -> None:
    cc = ConfChange(LEARN, 7, b"name=n7")
    assert ConfChange.decode(cc.encode()) == cc
