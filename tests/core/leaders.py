"""A real core leading three voters, for tests of what drives it (reads, the lease): member 1, elected in
term 2 over a bootstrapped log, its Readys drained into its in-memory storage."""

from __future__ import annotations

import random

from raftkv.core.rawnode import Config, RawNode, bootstrap_entries
from raftkv.core.storage import MemoryStorage
from raftkv.core.types import ConfState, HardState, Message, MessageType, Ready

MT = MessageType


def elected_leader(commit_own_entry: bool = True) -> RawNode:
    """Member 1 leading in term 2; with ``commit_own_entry`` its empty entry of term 2 is committed too
    (reads are served from then on)."""
    storage = MemoryStorage()
    boot = bootstrap_entries([(v, b"") for v in (1, 2, 3)])
    storage.append(boot)
    storage.set_hard_state(HardState(term=1, commit=len(boot)))
    storage.set_conf_state(ConfState(frozenset((1, 2, 3))))
    rn = RawNode(Config(id=1, applied=len(boot), pre_vote=False), storage, random.Random(1))
    rn.campaign()
    rn.step(Message(MT.VOTE_RESP, to=1, sender=2, term=2))
    drain(rn)
    if commit_own_entry:
        last = rn.raft.log.last_index()
        for follower in (2, 3):
            rn.step(Message(MT.APP_RESP, to=1, sender=follower, term=2, index=last))
        drain(rn)
    return rn


def drain(rn: RawNode) -> list[Ready]:
    """Take every Ready, persisting its entries as a driver would, and return them."""
    readys = []
    while rn.has_ready():
        rd = rn.ready()
        rn.raft.log.storage.append(rd.entries)  # type: ignore[attr-defined]
        rn.advance(rd)
        readys.append(rd)
    return readys
