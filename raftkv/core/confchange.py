"""Single-step membership changes: validation and application.

raftkv changes the configuration one node at a time (no joint consensus), which is safe because any two
majorities of configurations differing by one voter intersect — provided a change is only proposed after the
previous one is applied (enforced by the leader, see ``Raft``). This module is the pure part: given the
configuration in force, is a change meaningful, and what configuration results.
"""

from __future__ import annotations

from raftkv.core.types import ConfChange, ConfChangeType, ConfState


def validate(cs: ConfState, cc: ConfChange) -> str | None:
    """Why ``cc`` must be refused against ``cs`` (a reason for ProposalDropped), or None if acceptable."""
    if cc.node_id == 0:
        return "conf change for node id 0"
    if cc.type == ConfChangeType.ADD_VOTER and cc.node_id in cs.voters:
        return f"node {cc.node_id} is already a voter"
    if cc.type == ConfChangeType.ADD_LEARNER and cc.node_id in cs.learners:
        return f"node {cc.node_id} is already a learner"
    if cc.type == ConfChangeType.REMOVE_NODE:
        if cc.node_id not in cs.members():
            return f"node {cc.node_id} is not a member"
        if cs.voters == {cc.node_id}:
            return "removing the last voter"
    if cc.type == ConfChangeType.ADD_LEARNER and cs.voters == {cc.node_id}:
        return "demoting the last voter"
    return None


def apply(cs: ConfState, cc: ConfChange) -> ConfState:
    """The configuration after ``cc``. Every replica applies the same log, so this must be a pure function.

    A change that ``validate`` would refuse (possible only if it was proposed against a configuration that a
    later change overtook) leaves the configuration unchanged rather than crashing every replica.
    """
    if validate(cs, cc) is not None:
        return cs
    voters, learners = set(cs.voters), set(cs.learners)
    voters.discard(cc.node_id)
    learners.discard(cc.node_id)
    if cc.type == ConfChangeType.ADD_VOTER:
        voters.add(cc.node_id)
    elif cc.type == ConfChangeType.ADD_LEARNER:
        learners.add(cc.node_id)
    return ConfState(frozenset(voters), frozenset(learners))
