"""Linearizable reads on a leader: one loop wake-up per ReadIndex round, not one per read.

Reads that arrive while a round is in flight cannot join it (it started before them), so waking the Raft
loop for each of them would buy a turn that does nothing; the round's answer starts the next round for all
of them instead. Driven with a real core (``RawNode``) leading three voters and a clock the test moves."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from raftkv.core.rawnode import Config, RawNode, bootstrap_entries
from raftkv.core.storage import MemoryStorage
from raftkv.core.types import ConfState, HardState, Message, MessageType, Ready
from raftkv.server.node.reads import LinearizableReads

MT = MessageType


class _Timer:
    def __init__(self, due: float, callback: Callable[[], None]) -> None:
        self.due, self.callback, self.cancelled = due, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class _Clock:
    """Time moves only when the test says (``advance``), so the least gap between rounds is exact."""

    def __init__(self) -> None:
        self.t = 100.0
        self.timers: list[_Timer] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> Awaitable[None]:
        raise AssertionError("reads never sleep")

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(self.t + delay, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.t += seconds
        due = [t for t in self.timers if t.due <= self.t and not t.cancelled]
        self.timers = [t for t in self.timers if t not in due]
        for timer in due:
            timer.callback()


def _leader() -> RawNode:
    storage = MemoryStorage()
    boot = bootstrap_entries([(v, b"") for v in (1, 2, 3)])
    storage.append(boot)
    storage.set_hard_state(HardState(term=1, commit=len(boot)))
    storage.set_conf_state(ConfState(frozenset((1, 2, 3))))
    rn = RawNode(Config(id=1, applied=len(boot), pre_vote=False), storage, random.Random(1))
    rn.campaign()
    rn.step(Message(MT.VOTE_RESP, to=1, sender=2, term=2))
    _drain(rn)
    last = rn.raft.log.last_index()
    for follower in (2, 3):  # the leader's empty entry commits: reads are served from now on
        rn.step(Message(MT.APP_RESP, to=1, sender=follower, term=2, index=last))
    _drain(rn)
    return rn


def _drain(rn: RawNode) -> list[Ready]:
    readys = []
    while rn.has_ready():
        rd = rn.ready()
        rn.raft.log.storage.append(rd.entries)  # type: ignore[attr-defined]
        rn.advance(rd)
        readys.append(rd)
    return readys


def test_reads_during_a_round_do_not_wake_the_loop_and_its_answer_starts_the_next() -> None:
    async def scenario() -> None:
        rn = _leader()
        applied = rn.raft.log.committed
        wakes: list[int] = []
        clock = _Clock()
        reads = LinearizableReads(1, 100, clock, 1.0, lambda: wakes.append(1))

        first = asyncio.ensure_future(reads.barrier(5.0))
        await asyncio.sleep(0)
        assert len(wakes) == 1  # no round in flight: this read starts one
        reads.feed(rn, applied)
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

        reads.feed(rn, applied)  # the next turn: under load the round waits out the least gap between rounds
        assert not _drain(rn)
        clock.advance(0.01)
        assert len(wakes) == 3  # the gap's timer
        reads.feed(rn, applied)  # one round for all ten
        (rd,) = _drain(rn)
        (beat, _) = [m for m in rd.messages if m.type == MT.HEARTBEAT]
        rn.step(Message(MT.HEARTBEAT_RESP, to=1, sender=beat.to, term=2, context=beat.context))
        (rd,) = _drain(rn)
        reads.answered(rd.read_states, applied)
        await asyncio.gather(*later)
        assert len(wakes) == 3  # nothing was left queued

    asyncio.run(scenario())
