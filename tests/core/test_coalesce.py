"""Folding a Ready's messages changes how many are sent, never what a peer ends up with."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv.core.coalesce import coalesce
from raftkv.core.types import Entry, Message, MessageType
from tests.core.test_raft import drain, node

MT = MessageType
BOOT = 3  # the bootstrap entries every test node starts with (term 1, committed)


@st.composite
def append_runs(draw: st.DrawFn) -> tuple[list[Message], int]:
    """Contiguous appends from leader 1 at term 2 to follower 2, as one leader turn produces them, and the
    per-message entry limit the leader sent them under."""
    max_entries = draw(st.integers(1, 4))
    messages, last, commit = [], BOOT, BOOT
    for _ in range(draw(st.integers(1, 8))):
        count = draw(st.integers(0, max_entries))
        entries = tuple(Entry(term=2, index=last + 1 + i, data=b"x") for i in range(count))
        commit = draw(st.integers(commit, last + count))
        messages.append(
            Message(MT.APP, to=2, sender=1, term=2, index=last, log_term=1 if last == BOOT else 2, entries=entries,
                    commit=commit)
        )
        last += count
    return messages, max_entries


def follower_after(messages: list[Message]) -> tuple[list[Entry], int, list[Message]]:
    rn = node(2, check_quorum=False)
    for m in messages:
        rn.step(m)
    answers = drain(rn)
    log = rn.raft.log
    return log.all_entries(), log.committed, answers


# Wall-clock limits measure the machine, not the code: on a loaded one they failed examples that pass.
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(append_runs())
def test_a_follower_ends_the_same_given_folded_appends(run: tuple[list[Message], int]) -> None:
    messages, max_entries = run
    folded = coalesce(messages, max_entries, 1 << 20)
    assert all(len(m.entries) <= max_entries for m in folded)
    log, commit, answers = follower_after(messages)
    folded_log, folded_commit, folded_answers = follower_after(folded)
    assert (folded_log, folded_commit) == (log, commit)
    assert [a.index for a in folded_answers if a.type == MT.APP_RESP][-1] == log[-1].index
    assert len(coalesce(answers, max_entries, 1 << 20)) == 1  # all successful answers fold into the newest


def test_rejections_and_other_peers_are_left_alone() -> None:
    to_leader = [
        Message(MT.APP_RESP, to=1, sender=2, term=2, index=5),
        Message(MT.APP_RESP, to=1, sender=2, term=2, index=4, reject=True, reject_hint=3),
        Message(MT.APP_RESP, to=1, sender=2, term=2, index=6),
    ]
    assert coalesce(to_leader, 10, 1 << 20) == to_leader
    a = Message(MT.APP, to=2, sender=1, term=2, index=3, log_term=1, commit=3)
    b = Message(MT.APP, to=3, sender=1, term=2, index=3, log_term=1, commit=3)
    heartbeat = Message(MT.HEARTBEAT, to=2, sender=1, term=2, commit=3)
    c = Message(MT.APP, to=2, sender=1, term=2, index=3, log_term=1, commit=4)
    # b goes to another peer, so a and c still fold; a heartbeat between them to the same peer stops that.
    assert coalesce([a, b, c], 10, 1 << 20) == [Message(MT.APP, to=2, sender=1, term=2, index=3, log_term=1,
                                                        commit=4), b]
    assert coalesce([a, heartbeat, c], 10, 1 << 20) == [a, heartbeat, c]


def test_a_request_a_follower_forwards_for_another_node_keeps_its_sender_and_is_not_folded() -> None:
    """A follower passes a ReadIndex that another node sent it (thinking it led) on to its leader as it came;
    in the same Ready as the follower's own answer to that leader, it is sent unfolded (this stopped a member
    with an assertion in a five-member fault run)."""
    rn = node(2)
    rn.step(Message(MT.HEARTBEAT, to=2, sender=1, term=2, commit=BOOT))
    drain(rn)
    rn.step(Message(MT.READ_INDEX, to=2, sender=3, context=b"read"))
    rn.step(Message(MT.APP, to=2, sender=1, term=2, index=BOOT, log_term=1, commit=BOOT))
    sent = drain(rn)
    assert [(m.type, m.sender, m.to) for m in sent] == [(MT.READ_INDEX, 3, 1), (MT.APP_RESP, 2, 1)]
    forwarded = Message(MT.READ_INDEX, to=1, sender=3, context=b"read")
    answer = Message(MT.APP_RESP, to=1, sender=2, term=2, index=BOOT)
    assert coalesce([forwarded, answer, answer], 10, 1 << 20) == [forwarded, answer]
