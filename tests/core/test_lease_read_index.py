"""What the core lets a leader holding a lease serve (``RawNode.lease_read_index``): its commit index, only
once an entry of its own term is committed, never while a leadership transfer is under way."""

from __future__ import annotations

import random

from raftkv.core.rawnode import Config, RawNode, bootstrap_entries
from raftkv.core.storage import MemoryStorage
from raftkv.core.types import ConfState, HardState, Message, MessageType
from tests.core.leaders import drain, elected_leader

MT = MessageType


def test_a_new_leader_serves_nothing_under_a_lease_until_an_entry_of_its_term_commits() -> None:
    rn = elected_leader(commit_own_entry=False)
    assert rn.leader_term() == 2
    assert rn.lease_read_index(2) is None  # its commit index may still lag the previous leader's
    rn.step(Message(MT.APP_RESP, to=1, sender=2, term=2, index=rn.raft.log.last_index()))
    drain(rn)
    assert rn.lease_read_index(2) == rn.raft.log.committed == rn.raft.log.last_index()
    assert rn.lease_read_index(1) is None and rn.lease_read_index(3) is None  # only for the term it leads in


def test_no_lease_read_during_a_transfer_or_once_deposed() -> None:
    rn = elected_leader(commit_own_entry=False)
    rn.step(Message(MT.APP_RESP, to=1, sender=2, term=2, index=rn.raft.log.last_index()))
    drain(rn)
    rn.transfer_leader(3)
    assert rn.lease_read_index(2) is None  # TIMEOUT_NOW may elect the transferee at once
    rn.step(Message(MT.HEARTBEAT, to=1, sender=2, term=3))
    drain(rn)
    assert rn.leader_term() == 0 and rn.lease_read_index(2) is None and rn.lease_read_index(3) is None


def test_a_transfer_voids_the_lease_for_the_rest_of_its_term_even_once_given_up() -> None:
    rn = elected_leader()
    rn.transfer_leader(3)
    for _ in range(rn.raft.cfg.election_tick):  # the transfer times out and is given up
        rn.tick()
    drain(rn)
    assert rn.raft.lead_transferee == 0 and rn.leader_term() == 2
    assert rn.lease_read_index(2) is None  # the TIMEOUT_NOW sent may still elect member 3 at any moment


def _booted_follower(refuse_votes_after_boot: bool) -> RawNode:
    storage = MemoryStorage()
    boot = bootstrap_entries([(v, b"") for v in (1, 2, 3)])
    storage.append(boot)
    storage.set_hard_state(HardState(term=1, commit=len(boot)))
    storage.set_conf_state(ConfState(frozenset((1, 2, 3))))
    config = Config(id=2, applied=len(boot), refuse_votes_after_boot=refuse_votes_after_boot)
    return RawNode(config, storage, random.Random(1))


def _grants_vote(rn: RawNode) -> bool:
    last = rn.raft.log.last_index()
    rn.step(Message(MT.VOTE, to=2, sender=3, term=2, index=last, log_term=1))
    votes = [m for rd in drain(rn) for m in rd.messages if m.type == MT.VOTE_RESP]
    return bool(votes) and not votes[0].reject


def test_with_leases_a_restarted_member_votes_only_an_election_timeout_after_boot() -> None:
    """It may have acknowledged a lease-holding leader just before it went down: voting at once could elect
    another leader inside that lease."""
    assert _grants_vote(_booted_follower(refuse_votes_after_boot=False))
    rn = _booted_follower(refuse_votes_after_boot=True)
    assert not _grants_vote(rn)
    for _ in range(rn.raft.cfg.election_tick):
        rn.tick()
    drain(rn)
    assert _grants_vote(rn)
