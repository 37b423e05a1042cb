"""Majority arithmetic: which index a quorum has replicated, and how an election stands.

Kept apart from the state machine so it can be checked exhaustively against a naive definition
(tests/core/test_quorum.py). raftkv changes membership one node at a time, so a single majority
configuration is all we need (no joint consensus).
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping


class VoteResult(enum.Enum):
    PENDING = 0
    LOST = 1
    WON = 2


def quorum_size(voters: Collection[int]) -> int:
    """Smallest number of voters that forms a majority."""
    return len(voters) // 2 + 1


def committed_index(voters: Collection[int], match: Mapping[int, int]) -> int:
    """Largest index replicated on a majority of ``voters`` (voters missing from ``match`` count as 0).

    Sorting the voters' match indexes in descending order, the ``quorum_size``-th one is held by at least a
    quorum. An empty configuration commits nothing (a node with no voters never leads).
    """
    if not voters:
        return 0
    acked = sorted((match.get(v, 0) for v in voters), reverse=True)
    return acked[quorum_size(voters) - 1]


def vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    """WON once a majority granted, LOST once a majority can no longer grant, PENDING otherwise.

    Votes from non-voters are ignored: a learner's (or a removed node's) answer must never decide an election
    or confirm a read.
    """
    granted = sum(1 for v in voters if votes.get(v) is True)
    missing = sum(1 for v in voters if v not in votes)
    need = quorum_size(voters)
    if granted >= need:
        return VoteResult.WON
    if granted + missing >= need:
        return VoteResult.PENDING
    return VoteResult.LOST
