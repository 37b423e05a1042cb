"""Read waiters: a ReadIndex round the core refuses must fail its reads, never let them through; rounds
of different members never share a context (the leader would answer only one of them)."""

from __future__ import annotations

import asyncio

import pytest

from raftkv import errors
from raftkv.server.waiters import ReadWaiters


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
        reads = ReadWaiters(member_id=1, base=1, min_gap=0.002)
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

    asyncio.run(scenario())
