"""Read waiters: a ReadIndex round the core refuses must fail its reads, never let them through."""

from __future__ import annotations

import asyncio

import pytest

from raftkv import errors
from raftkv.server.waiters import ReadWaiters


def test_refused_round_fails_its_reads_and_spares_other_rounds() -> None:
    async def scenario() -> None:
        reads = ReadWaiters()
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
