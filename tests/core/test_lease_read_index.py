"""What the core lets a leader holding a lease serve (``RawNode.lease_read_index``): its commit index, only
once an entry of its own term is committed, never while a leadership transfer is under way."""

from __future__ import annotations

import random

from raftkv.core.rawnode import Config, RawNode, bootstrap_entries
from raftkv.core.storage import MemoryStorage
from raftkv.core.types import ConfState, HardState, Message, MessageType

MT = MessageType


def _elected() -> RawNode:
    storage = MemoryStorage()
    boot = bootstrap_entries([(v, b"") for v in (1, 2, 3)])
    storage.append(boot)
    storage.set_hard_state(HardState(term=1, commit=len(boot)))
    storage.set_conf_state(ConfState(frozenset((1, 2, 3))))
    rn = RawNode(Config(id=1, applied=len(boot), pre_vote=False), storage, random.Random(1))
    rn.campaign()
    rn.step(Message(MT.VOTE_RESP, to=1, sender=2, term=2))
    _drain(rn)
    return rn


def _drain(rn: RawNode) -> None:
    while rn.has_ready():
        rd = rn.ready()
        rn.raft.log.storage.append(rd.entries)  # type: ignore[attr-defined]
        rn.advance(rd)


def test_a_new_leader_serves_nothing_under_a_lease_until_an_entry_of_its_term_commits() -> None:
    rn = _elected()
    assert rn.leader_term() == 2
    assert rn.lease_read_index(2) is None  # its commit index may still lag the previous leader's
    rn.step(Message(MT.APP_RESP, to=1, sender=2, term=2, index=rn.raft.log.last_index()))
    _drain(rn)
    assert rn.lease_read_index(2) == rn.raft.log.committed == rn.raft.log.last_index()
    assert rn.lease_read_index(1) is None and rn.lease_read_index(3) is None  # only for the term it leads in


def test_no_lease_read_during_a_transfer_or_once_deposed() -> None:
    rn = _elected()
    rn.step(Message(MT.APP_RESP, to=1, sender=2, term=2, index=rn.raft.log.last_index()))
    _drain(rn)
    rn.transfer_leader(3)
    assert rn.lease_read_index(2) is None  # TIMEOUT_NOW may elect the transferee at once
    rn.step(Message(MT.HEARTBEAT, to=1, sender=2, term=3))
    _drain(rn)
    assert rn.leader_term() == 0 and rn.lease_read_index(2) is None and rn.lease_read_index(3) is None
