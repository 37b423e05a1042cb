"""What the core lets a leader holding a lease serve (``RawNode.lease_read_index``): its commit index, only
once an entry of its own term is committed, never while a leadership transfer is under way."""

from __future__ import annotations

from raftkv.core.types import Message, MessageType
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
