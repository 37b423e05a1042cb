"""State-machine rules checked directly on single nodes (the golden scripts cover whole interactions)."""

from __future__ import annotations

import random

import pytest

from raftkv.core.rawnode import Config, RawNode, bootstrap_entries
from raftkv.core.storage import MemoryStorage
from raftkv.core.types import ConfState, Entry, HardState, Message, MessageType, ProposalDropped, Role

MT = MessageType


def node(node_id: int = 1, voters: tuple[int, ...] = (1, 2, 3), extra: list[Entry] | None = None,
         term: int = 1, **cfg: object) -> RawNode:
    s = MemoryStorage()
    boot = bootstrap_entries([(v, b"") for v in voters])
    s.append(boot + (extra or []))
    s.set_hard_state(HardState(term=term, commit=len(boot)))
    s.set_conf_state(ConfState(frozenset(voters)))
    return RawNode(Config(id=node_id, applied=len(boot), **cfg), s, random.Random(node_id))  # type: ignore[arg-type]


def drain(rn: RawNode) -> list[Message]:
    msgs: list[Message] = []
    while rn.has_ready():
        rd = rn.ready()
        storage = rn.raft.log.storage
        storage.append(rd.entries)  # type: ignore[attr-defined]
        if rd.hard_state:
            storage.set_hard_state(rd.hard_state)  # type: ignore[attr-defined]
        msgs += rd.messages
        rn.advance(rd)
    return msgs


def test_randomized_election_timeout_range() -> None:
    rn = node(election_tick=10)
    seen = set()
    for term in range(2, 300):
        rn.raft.become_follower(term, 0)
        seen.add(rn.raft.randomized_election_timeout)
    assert min(seen) == 10 and max(seen) == 19


def test_one_vote_per_term_and_planted_double_vote() -> None:
    for bugs, second_granted in ((frozenset(), False), (frozenset({"double_vote"}), True)):
        rn = node(1, check_quorum=False, unsafe_bugs=bugs)
        rn.step(Message(MT.VOTE, to=1, sender=2, term=5, index=3, log_term=1))
        rn.step(Message(MT.VOTE, to=1, sender=3, term=5, index=3, log_term=1))
        resps = [m for m in drain(rn) if m.type == MT.VOTE_RESP]
        assert [(m.to, m.reject) for m in resps] == [(2, False), (3, not second_granted)]


def test_vote_refused_to_stale_log() -> None:
    rn = node(1, extra=[Entry(term=2, index=4)], term=2, check_quorum=False)
    rn.step(Message(MT.VOTE, to=1, sender=2, term=3, index=5, log_term=1))
    (resp,) = [m for m in drain(rn) if m.type == MT.VOTE_RESP]
    assert resp.reject and rn.raft.term == 3 and rn.raft.vote == 0


def _leader_with_prior_term_entry(bugs: frozenset[str]) -> RawNode:
    rn = node(1, extra=[Entry(term=2, index=4, data=b"old")], term=2, pre_vote=False, unsafe_bugs=bugs)
    rn.campaign()
    rn.step(Message(MT.VOTE_RESP, to=1, sender=2, term=3))
    assert rn.raft.role == Role.LEADER and rn.raft.log.last_index() == 5
    drain(rn)
    return rn


@pytest.mark.parametrize(("bugs", "commit"), [(frozenset(), 3), (frozenset({"commit_prior_term"}), 4)])
def test_leader_commits_only_by_counting_current_term(bugs: frozenset[str], commit: int) -> None:
    rn = _leader_with_prior_term_entry(bugs)
    rn.step(Message(MT.APP_RESP, to=1, sender=2, term=3, index=4))  # a quorum holds 2/4, not 3/5
    assert rn.raft.log.committed == commit
    rn.step(Message(MT.APP_RESP, to=1, sender=2, term=3, index=5))
    assert rn.raft.log.committed == 5


def test_uncommitted_bytes_bound() -> None:
    rn = node(1, max_uncommitted_bytes=100, pre_vote=False)
    rn.campaign()
    rn.step(Message(MT.VOTE_RESP, to=1, sender=2, term=2))
    rn.propose(b"x" * 60)
    with pytest.raises(ProposalDropped, match="too many uncommitted entries"):
        rn.propose(b"y" * 60)
    drain(rn)
    rn.step(Message(MT.APP_RESP, to=1, sender=2, term=2, index=5))
    drain(rn)  # applying the committed entries releases their bytes
    assert rn.raft.uncommitted_size == 0
    rn.propose(b"y" * 60)


def test_a_proposal_batch_goes_out_as_one_append_per_follower() -> None:
    rn = node(1, pre_vote=False)
    rn.campaign()
    rn.step(Message(MT.VOTE_RESP, to=1, sender=2, term=2))
    drain(rn)
    for follower in (2, 3):  # both followers are now replicating
        rn.step(Message(MT.APP_RESP, to=1, sender=follower, term=2, index=4))
    drain(rn)
    rn.propose_batch([b"a", b"b", b"c"])
    apps = [m for m in drain(rn) if m.type == MT.APP and m.entries]
    assert sorted(m.to for m in apps) == [2, 3]
    assert all([e.data for e in m.entries] == [b"a", b"b", b"c"] for m in apps)


def test_a_leader_sends_before_its_write_and_counts_itself_only_once_durable() -> None:
    """Raft thesis §10.2.1: the leader's APPs may leave before its own write (``send_first``); its copy
    counts towards commit only after ``advance`` reports it persisted."""
    rn = node(1, pre_vote=False)
    rn.campaign()
    rd = rn.ready()
    assert not rd.send_first  # the vote for itself must be durable before the vote requests leave
    rn.advance(rd)
    rn.step(Message(MT.VOTE_RESP, to=1, sender=2, term=2))
    drain(rn)
    for follower in (2, 3):
        rn.step(Message(MT.APP_RESP, to=1, sender=follower, term=2, index=4))
    drain(rn)
    rn.propose(b"a")
    rd = rn.ready()
    assert rd.send_first and rd.entries and any(m.type == MT.APP and m.entries for m in rd.messages)
    (entry,) = rd.entries
    # One follower has it, the leader's write is not done: one durable copy of three is no quorum.
    rn.step(Message(MT.APP_RESP, to=1, sender=2, term=2, index=entry.index))
    assert rn.raft.log.committed < entry.index
    rn.raft.log.storage.append(rd.entries)  # type: ignore[attr-defined]
    rn.advance(rd)
    assert rn.raft.log.committed == entry.index
    # The commit the leader's own write completed goes out at once (an APP carrying it to each follower).
    assert sorted(m.to for m in rn.ready().messages if m.type == MT.APP and m.commit == entry.index) == [2, 3]


def test_a_proposal_batch_is_appended_whole_or_not_at_all() -> None:
    rn = node(1, max_uncommitted_bytes=100, pre_vote=False)
    rn.campaign()
    rn.step(Message(MT.VOTE_RESP, to=1, sender=2, term=2))
    rn.propose(b"x" * 60)
    last = rn.raft.log.last_index()
    with pytest.raises(ProposalDropped, match="too many uncommitted entries"):
        rn.propose_batch([b"y" * 20, b"z" * 30])
    assert rn.raft.log.last_index() == last


def test_hard_state_only_when_changed_and_must_sync() -> None:
    rn = node(1, pre_vote=False)
    rn.campaign()
    rd = rn.ready()
    assert rd.hard_state is not None and rd.hard_state.vote == 1 and rd.must_sync
    rn.advance(rd)
    assert not rn.has_ready()
    rn.tick()
    assert not rn.has_ready()


def test_stale_leader_learns_newer_term() -> None:
    rn = node(2, term=5)
    rn.step(Message(MT.APP, to=2, sender=1, term=3, index=3, log_term=1))
    (resp,) = drain(rn)
    assert (resp.type, resp.to, resp.term) == (MT.APP_RESP, 1, 5)


def test_local_messages_rejected_from_network() -> None:
    with pytest.raises(ValueError):
        node().step(Message(MT.HUP, to=1, sender=2))


def test_non_member_does_not_campaign() -> None:
    rn = node(4)
    for _ in range(100):
        rn.tick()
    assert rn.raft.role == Role.FOLLOWER and rn.raft.term == 1


def test_a_follower_relays_another_members_request_as_it_came() -> None:
    """Member 3 took 1 for the leader; 1 follows 2 by now and passes 3's requests on, still naming 3 and
    with no term: the shape the peer transport accepts from a relaying member (FORWARDED_REQUESTS). The
    leader answers the ReadIndex to 3; the proposal's origin does not matter to it."""
    rn = node(1, term=2)
    rn.step(Message(MT.HEARTBEAT, to=1, sender=2, term=2))
    drain(rn)
    proposal = Message(MT.PROPOSE, to=1, sender=3, entries=(Entry(0, 0, data=b"put"),))
    read = Message(MT.READ_INDEX, to=1, sender=3, context=b"read-7")
    rn.step(proposal)
    rn.step(read)
    relayed = drain(rn)
    assert relayed == [
        Message(MT.PROPOSE, to=2, sender=3, entries=proposal.entries),
        Message(MT.READ_INDEX, to=2, sender=3, context=b"read-7"),
    ]


def test_leads_in_names_the_term_of_the_leadership() -> None:
    rn = node(1, voters=(1,))
    rn.campaign()
    drain(rn)
    term = rn.raft.term
    assert rn.raft.role == Role.LEADER and rn.leads_in(term) and not rn.leads_in(term - 1)
    rn.raft.become_follower(term + 1, 0)
    assert not rn.leads_in(term) and not rn.leads_in(term + 1)
