"""Read waiters: a ReadIndex round the core refuses must fail its reads, never let them through; rounds
of different members never share a context (the leader would answer only one of them)."""

from __future__ import annotations

import asyncio

import pytest

from raftkv import errors
from raftkv.server.read_gap import RoundGap
from raftkv.server.waiters import ProposalWaiters, ReadWaiters


def test_refused_round_fails_its_reads_and_spares_other_rounds() -> None:
    async def scenario() -> None:
        reads = ReadWaiters(member_id=1, base=1)
        earlier = reads.enqueue()
        first = reads.take_queued(now=0.0)
        assert first is not None
        reads.answered(first[0], index=10, applied=5)  # confirmed, waiting for apply to reach 10

        refused = reads.enqueue()
        second = reads.take_queued(now=0.0)
        assert second is not None
        reads.fail_round(second[0], errors.NO_LEADER)

        assert refused.done()
        with pytest.raises(errors.EtcdException) as exc:
            refused.result()
        assert exc.value.error == errors.NO_LEADER
        assert not earlier.done()  # its leadership was confirmed; it only waits for the apply
        reads.applied(10)
        assert earlier.done() and earlier.exception() is None

    asyncio.run(scenario())


def test_rounds_of_different_members_never_share_a_context() -> None:
    async def scenario() -> None:
        contexts = set()
        for member_id in (1, 2, 3):
            reads = ReadWaiters(member_id, base=1)  # the same counter start: only the member id tells them apart
            for _ in range(3):
                reads.enqueue()
                taken = reads.take_queued(now=0.0)
                assert taken is not None
                contexts.add(taken[0])
                reads.answered(taken[0], index=1, applied=1)
        assert len(contexts) == 9

    asyncio.run(scenario())


def test_rounds_are_spaced_only_under_load() -> None:
    async def scenario() -> None:
        reads = ReadWaiters(member_id=1, base=1, gap=RoundGap(least=0.002))
        reads.enqueue()
        first = reads.take_queued(now=10.0)
        assert first is not None
        reads.answered(first[0], index=1, applied=1)  # nothing was waiting meanwhile: no load
        reads.enqueue()
        second = reads.take_queued(now=10.0005)  # a lone read starts its round at once
        assert second is not None

        reads.enqueue()  # arrives while the second round is in flight
        assert reads.take_queued(now=10.001) is None
        reads.answered(second[0], index=1, applied=1)  # ends with a read waiting: load
        assert reads.take_queued(now=10.001) is None
        assert reads.round_due(now=10.001) == pytest.approx(10.0025)
        third = reads.take_queued(now=10.003)
        assert third is not None and len(third[1]) == 1

        # The event loop's clock counts whole milliseconds: once the timer set for round_due fires, the round
        # starts even if the clock has not moved past the gap.
        reads.enqueue()
        reads.answered(third[0], index=1, applied=1)
        assert reads.take_queued(now=10.003) is None
        assert reads.take_queued(now=10.003, gap_waited=True) is not None

    asyncio.run(scenario())


def test_a_new_leader_is_asked_at_once_for_rounds_the_old_one_left_unanswered() -> None:
    async def scenario() -> None:
        reads = ReadWaiters(member_id=1, base=1)
        lost = reads.enqueue()
        old = reads.take_queued(now=0.0)
        assert old is not None
        reads.requeue_in_flight()  # the leader changed long before requeue_stale would give up on it
        again = reads.take_queued(now=0.001)
        assert again is not None and again[0] != old[0], "a retried round never reuses its context"
        reads.answered(old[0], index=99, applied=0)  # a late answer from the old leader counts for nothing
        assert not lost.done()
        reads.answered(again[0], index=3, applied=3)
        assert lost.done() and lost.exception() is None

    asyncio.run(scenario())


def test_proposals_still_waiting_when_the_leader_changes_are_told_so() -> None:
    async def scenario() -> None:
        waiters = ProposalWaiters(base=1)
        _, first = waiters.register()
        _, second = waiters.register()
        waiters.fail_all(errors.LEADER_CHANGED)
        for future in (first, second):
            with pytest.raises(errors.EtcdException) as exc:
                future.result()
            assert exc.value.error == errors.LEADER_CHANGED
        assert len(waiters) == 0

    asyncio.run(scenario())
