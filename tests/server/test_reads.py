"""Linearizable reads on a leader: one loop wake-up per ReadIndex round, not one per read; under the leader
lease (off by default), none at all until the lease needs renewing.

Reads that arrive while a round is in flight cannot join it (it started before them), so waking the Raft
loop for each of them would buy a turn that does nothing; the round's answer starts the next round for all
of them instead. Driven with a real core (``RawNode``) leading three voters and a clock the test moves."""

from __future__ import annotations

import asyncio

import pytest

from raftkv.core.rawnode import RawNode
from raftkv.core.types import Message, MessageType
from raftkv.server.config import parse_config
from raftkv.server.node.read_lease import ReadLease, lease_seconds
from raftkv.server.node.reads import LinearizableReads
from tests.core.leaders import drain as _drain
from tests.core.leaders import elected_leader as _leader
from tests.server.manual_clock import ManualClock

MT = MessageType


def test_reads_during_a_round_do_not_wake_the_loop_and_its_answer_starts_the_next() -> None:
    async def scenario() -> None:
        rn = _leader()
        applied = rn.raft.log.committed
        wakes: list[int] = []
        clock = ManualClock()
        reads = LinearizableReads(1, 100, rn, clock, 1.0, lambda: wakes.append(1))

        first = asyncio.ensure_future(reads.barrier(5.0))
        await asyncio.sleep(0)
        assert len(wakes) == 1  # no round in flight: this read starts one
        reads.feed(applied)
        (rd,) = _drain(rn)
        (beat, _) = [m for m in rd.messages if m.type == MT.HEARTBEAT]

        later = [asyncio.ensure_future(reads.barrier(5.0)) for _ in range(10)]
        await asyncio.sleep(0)
        assert len(wakes) == 1  # the round in flight started before them: nothing for a turn to do

        rn.step(Message(MT.HEARTBEAT_RESP, to=1, sender=beat.to, term=2, context=beat.context))
        (rd,) = _drain(rn)
        reads.answered(rd.read_states, applied)
        await first
        assert len(wakes) == 2 and not any(f.done() for f in later)  # one wake-up for the ten queued

        reads.feed(applied)  # the next turn: under load the round waits out the least gap between rounds
        assert not _drain(rn)
        clock.advance(0.01)
        assert len(wakes) == 3  # the gap's timer
        reads.feed(applied)  # one round for all ten
        (rd,) = _drain(rn)
        (beat, _) = [m for m in rd.messages if m.type == MT.HEARTBEAT]
        rn.step(Message(MT.HEARTBEAT_RESP, to=1, sender=beat.to, term=2, context=beat.context))
        (rd,) = _drain(rn)
        reads.answered(rd.read_states, applied)
        await asyncio.gather(*later)
        assert len(wakes) == 3  # nothing was left queued

    asyncio.run(scenario())


async def _leased(clock: ManualClock, wakes: list[int] | None = None) -> tuple[RawNode, LinearizableReads, int]:
    """A leader whose first read took a round a quorum answered: it holds a 0.9 s lease from ``clock.now()``."""
    rn = _leader()
    applied = rn.raft.log.committed
    log = wakes if wakes is not None else []
    reads = LinearizableReads(1, 100, rn, clock, 1.0, lambda: log.append(1), lease=ReadLease(0.9))
    first = asyncio.ensure_future(reads.barrier(5.0))
    await asyncio.sleep(0)
    reads.feed(applied)
    _answer_round(rn, reads, applied)
    await first
    return rn, reads, applied


def _answer_round(rn: RawNode, reads: LinearizableReads, applied: int) -> None:
    """The round the last feed started is acknowledged by one follower: with the leader, a quorum."""
    (rd,) = _drain(rn)
    (beat, _) = [m for m in rd.messages if m.type == MT.HEARTBEAT]
    rn.step(Message(MT.HEARTBEAT_RESP, to=1, sender=beat.to, term=2, context=beat.context))
    (rd,) = _drain(rn)
    reads.answered(rd.read_states, applied)


def test_under_the_leader_lease_reads_need_no_round_until_it_runs_out() -> None:
    async def scenario() -> None:
        rn = _leader()
        applied = rn.raft.log.committed
        wakes: list[int] = []
        clock = ManualClock()
        lease = ReadLease(0.9)
        reads = LinearizableReads(1, 100, rn, clock, 1.0, lambda: wakes.append(1), lease=lease)

        first = asyncio.ensure_future(reads.barrier(5.0))  # no lease yet: a round, as without one
        await asyncio.sleep(0)
        round_started = clock.now()
        reads.feed(applied)
        clock.advance(0.05)
        _answer_round(rn, reads, applied)
        await first
        assert reads.rounds_started == 1 and len(wakes) == 1

        await asyncio.gather(*(reads.barrier(5.0) for _ in range(10)))  # answered at once, no turn, no round
        assert reads.lease_reads == 10 and len(wakes) == 1 and not _drain(rn)

        clock.t = round_started + 0.5  # past half the lease: still served, and the next turn renews it
        await reads.barrier(5.0)
        assert len(wakes) == 2
        reads.feed(applied)
        assert reads.rounds_started == 2
        _answer_round(rn, reads, applied)

        clock.t = round_started + 0.5 + 0.9  # the renewal's lease ran out too: a read waits for a round again
        late = asyncio.ensure_future(reads.barrier(5.0))
        await asyncio.sleep(0)
        assert not late.done() and reads.lease_reads == 11
        reads.feed(applied)
        _answer_round(rn, reads, applied)
        await late

    asyncio.run(scenario())


def test_a_lease_read_waits_for_the_commit_index_to_be_applied() -> None:
    async def scenario() -> None:
        rn, reads, applied = await _leased(ManualClock())
        rn.propose(b"x")  # committed by a follower's answer, not applied yet
        (rd,) = _drain(rn)
        (app, _) = [m for m in rd.messages if m.type == MT.APP]
        rn.step(Message(MT.APP_RESP, to=1, sender=app.to, term=2, index=rn.raft.log.last_index()))
        _drain(rn)
        committed = rn.raft.log.committed
        assert committed == applied + 1
        read = asyncio.ensure_future(reads.barrier(5.0))
        await asyncio.sleep(0)
        assert not read.done()  # under the lease, but the commit index is ahead of what is applied
        reads.applied(committed)
        await read

    asyncio.run(scenario())


def test_no_lease_from_a_round_answered_after_losing_office_or_during_a_transfer() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        rn, reads, _ = await _leased(clock)
        rn.transfer_leader(2)  # TIMEOUT_NOW may let member 2 win at once: the lease is void from now on
        _drain(rn)
        during = asyncio.ensure_future(reads.barrier(5.0))
        await asyncio.sleep(0)
        assert not during.done() and reads.lease_reads == 0
        rn.step(Message(MT.APP, to=1, sender=2, term=3))  # member 2 leads in term 3
        _drain(rn)
        reads.leader_changed()
        assert ReadLease(0.9).read_index(rn, clock.now()) is None
        assert rn.lease_read_index(2) is None and rn.lease_read_index(3) is None
        during.cancel()

    asyncio.run(scenario())


def test_the_lease_is_the_election_timeout_less_a_tick_and_the_drift_allowance() -> None:
    assert lease_seconds(10, 100) == pytest.approx(0.9 * 0.9)  # 1 s election timeout, 100 ms ticks, 10% drift
    assert lease_seconds(10, 100, drift=0.0) == pytest.approx(0.9)
    assert lease_seconds(2, 500, drift=0.0) == pytest.approx(0.5)


def test_the_lease_is_off_unless_asked_for() -> None:
    plain = ["--insecure-plaintext"]
    assert parse_config(plain).leader_lease_reads is False
    assert parse_config([*plain, "--experimental-leader-lease-reads"]).leader_lease_reads is True
    assert parse_config([*plain, "--experimental-leader-lease-reads=false"]).leader_lease_reads is False
