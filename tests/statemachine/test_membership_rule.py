"""Membership arithmetic has one owner: the applier and the core compute the same configuration.

Every replica applies the log's conf changes twice, once in the core (``RawNode.apply_conf_change``) and
once in the state machine (the members table and the ``ConfState`` stored with the applied index). Both
call ``raftkv.core.confchange``; these edge cases — where two hand-written rules used to disagree — go
through both paths and must agree, including on the changes the rule refuses.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from raftkv.core import confchange
from raftkv.core.rawnode import Config, RawNode, bootstrap_entries
from raftkv.core.storage import MemoryStorage
from raftkv.core.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
)
from raftkv.statemachine.node_store import NodeStore

ADD, LEARN, REMOVE = ConfChangeType.ADD_VOTER, ConfChangeType.ADD_LEARNER, ConfChangeType.REMOVE_NODE

EDGE_CASES = [
    pytest.param([1, 2, 3], ConfChange(LEARN, 2), id="add-learner-of-an-existing-voter"),
    pytest.param([1, 2, 3], ConfChange(ADD, 0), id="add-of-node-0"),
    pytest.param([1], ConfChange(REMOVE, 1), id="remove-the-last-voter"),
    pytest.param([1], ConfChange(LEARN, 1), id="demote-the-last-voter"),
    pytest.param([1, 2, 3], ConfChange(ADD, 2), id="add-an-existing-voter"),
    pytest.param([1, 2, 3], ConfChange(REMOVE, 9), id="remove-a-stranger"),
    pytest.param([1, 2, 3], ConfChange(ADD, 4), id="add-a-voter"),
]


def _through_the_core(voters: list[int], cc: ConfChange) -> ConfState:
    storage = MemoryStorage()
    boot = bootstrap_entries([(v, b"") for v in voters])
    storage.append(boot)
    storage.set_hard_state(HardState(term=1, commit=len(boot)))
    storage.set_conf_state(ConfState(voters=frozenset(voters)))
    raw = RawNode(Config(id=voters[0], applied=len(boot)), storage, random.Random(1))
    return raw.apply_conf_change(cc)


def _through_the_applier(tmp_path: Path, voters: list[int], cc: ConfChange) -> tuple[ConfState, set[int], set[int]]:
    store = NodeStore(tmp_path / "store")
    try:
        store.bootstrap(0xC1, voters[0], [(v, b"") for v in voters])
        entry = Entry(term=1, index=len(voters) + 1, type=EntryType.CONF_CHANGE, data=cc.encode())
        store.save(None, [entry], HardState(1, 0, entry.index)).result()
        store.apply([entry]).result()
        members = store.members()
        return store.conf_state(), {m.ID for m in members}, {m.ID for m in members if m.isLearner}
    finally:
        store.close()


@pytest.mark.parametrize(("voters", "cc"), EDGE_CASES)
def test_applier_and_core_agree(tmp_path: Path, voters: list[int], cc: ConfChange) -> None:
    expected = confchange.apply(ConfState(voters=frozenset(voters)), cc)
    assert _through_the_core(voters, cc) == expected
    stored, member_ids, learner_ids = _through_the_applier(tmp_path, voters, cc)
    assert stored == expected
    assert member_ids == set(expected.members()) and learner_ids == set(expected.learners)
