"""Futures that connect an RPC waiting on the loop to the Raft event that completes it.

Two kinds: proposals wait for their entry to be applied (matched by the request id the node stamped into
the entry), and linearizable reads wait for a ReadIndex round and then for the applied index to reach it.
Both are plain bookkeeping on the event loop; the node resolves them from its Ready loop.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass, field
from typing import TypeVar

from raftkv.errors import EtcdError
from raftkv.proto import internal_pb2
from raftkv.server.read_gap import RoundGap

T = TypeVar("T")


async def within(future: asyncio.Future[T], timeout: float) -> T:
    """``asyncio.wait_for`` for a bare future, minus its extra waiter future and callbacks: a timer fails
    the future itself with ``TimeoutError``. Every client request waits this way, so the saving counts."""

    def expire() -> None:
        if not future.done():
            future.set_exception(TimeoutError())

    timer = future.get_loop().call_later(timeout, expire)
    try:
        return await future
    finally:
        timer.cancel()


class ProposalWaiters:
    """Request id -> future of its ApplyResult. Ids are unique per node run (random base + counter)."""

    def __init__(self, base: int) -> None:
        self._ids = itertools.count(base)
        self._futures: dict[int, asyncio.Future[internal_pb2.ApplyResult]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def register(self) -> tuple[int, asyncio.Future[internal_pb2.ApplyResult]]:
        request_id = next(self._ids) & 0xFFFF_FFFF_FFFF_FFFF
        if self._loop is None:  # asyncio.get_running_loop() makes a getpid system call each time
            self._loop = asyncio.get_running_loop()
        future: asyncio.Future[internal_pb2.ApplyResult] = self._loop.create_future()
        self._futures[request_id] = future
        return request_id, future

    def forget(self, request_id: int) -> None:
        self._futures.pop(request_id, None)

    def resolve(self, request_id: int, result: internal_pb2.ApplyResult) -> None:
        future = self._futures.pop(request_id, None)
        if future is not None and not future.done():
            future.set_result(result)

    def fail(self, request_id: int, error: EtcdError) -> None:
        future = self._futures.pop(request_id, None)
        if future is not None and not future.done():
            future.set_exception(error.exception())

    def fail_all(self, error: EtcdError) -> None:
        futures, self._futures = self._futures, {}
        for future in futures.values():
            if not future.done():
                future.set_exception(error.exception())

    def __len__(self) -> int:
        return len(self._futures)


@dataclass(order=True)
class _AppliedWait:
    index: int
    seq: int
    future: asyncio.Future[None] = field(compare=False)


class ReadWaiters:
    """Linearizable reads: batched into ReadIndex rounds, then released when ``applied >= read index``.

    Reads arriving while a round is in flight join the *next* round — they started after it was issued, so
    its index might not cover writes acknowledged before they began. A round that gets no answer (leader
    changed, message lost) is retried under a new context, never reusing the old one (etcd #20418).
    """

    def __init__(self, member_id: int, base: int, gap: RoundGap | None = None) -> None:
        """Contexts are ``member_id`` then a counter from ``base``. A follower's round is answered by the
        leader, which ignores a context it already has pending: two followers counting from the same number
        would collide there, and one of them would wait out ``requeue_stale``. A random ``base`` keeps a
        restarted member clear of its previous run's rounds.

        Under load (reads were already waiting when the previous round ended) rounds start at least ``gap``
        apart, so that each carries more reads for the same cost (``read_gap.py``, which finds how long);
        otherwise a read starts its round at once, so a lone client's reads never wait for the gap."""
        self._queued: list[asyncio.Future[None]] = []
        self._rounds: dict[bytes, tuple[float, list[asyncio.Future[None]]]] = {}
        self._by_index: list[_AppliedWait] = []
        self._prefix = member_id.to_bytes(8, "big")
        self._gap = gap or RoundGap()
        self._last_start = float("-inf")
        self._loaded = False  # reads were waiting when the last round ended
        self._ctx = itertools.count(base)
        self._seq = itertools.count()

    def enqueue(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append(future)
        return future

    def take_queued(
        self, now: float, even_if_empty: bool = False, gap_waited: bool = False
    ) -> tuple[bytes, list[asyncio.Future[None]]] | None:
        """Start a round for every queued read: returns its context, or None if nothing is queued, a round
        is still in flight, or the last one started less than the gap ago (``round_due`` says when
        to ask again). One round at a time (as etcd's read loop): under load every round then carries all
        reads that arrived during the previous one, instead of each Ready turn paying for a heartbeat
        broadcast and its acknowledgements. A lost round is retried by ``requeue_stale``. ``even_if_empty``
        starts a round with no reads of its own (one that renews the leader lease, ``read_lease.py``).
        ``gap_waited``: a timer set for ``round_due`` fired, so the gap is over whatever ``now`` says (the
        event loop's clock counts whole milliseconds, a gap may be shorter)."""
        if self._rounds or (self._loaded and not gap_waited and now < self._last_start + self._gap.seconds):
            return None
        waiting = [f for f in self._queued if not f.done()]
        self._queued.clear()
        if not waiting and not even_if_empty:
            return None
        ctx = self._prefix + (next(self._ctx) & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "big")
        self._rounds[ctx] = (now, waiting)
        self._last_start = now
        self._gap.round_started(now, len(waiting))
        return ctx, waiting

    def round_due(self, now: float) -> float | None:
        """When queued reads wait only for the gap: the time their round may start; else None."""
        if self._queued and self._loaded and not self._rounds and now < self._last_start + self._gap.seconds:
            return self._last_start + self._gap.seconds
        return None

    def requeue_stale(self, now: float, max_age: float) -> None:
        """Rounds older than ``max_age`` lost their answer: put their reads back in the queue."""
        for ctx, (started, futures) in list(self._rounds.items()):
            if now - started >= max_age:
                del self._rounds[ctx]
                self._queued.extend(f for f in futures if not f.done())

    def requeue_in_flight(self) -> None:
        """The leader changed: rounds in flight went to the old one (or died with its term here) and will
        not be answered, so their reads join the next round now rather than after ``requeue_stale``."""
        self.requeue_stale(float("inf"), 0.0)

    def answered(self, ctx: bytes, index: int, applied: int) -> None:
        started_futures = self._rounds.pop(ctx, None)
        if started_futures is None:
            return
        self._loaded = bool(self._queued)
        for future in started_futures[1]:
            if index <= applied:
                if not future.done():
                    future.set_result(None)
            else:
                heapq.heappush(self._by_index, _AppliedWait(index, next(self._seq), future))

    def wait_applied(self, index: int) -> asyncio.Future[None]:
        """A read already given its index (under the leader lease): released once ``index`` is applied."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._by_index, _AppliedWait(index, next(self._seq), future))
        return future

    def fail_round(self, ctx: bytes, error: EtcdError) -> None:
        """The core refused the round (no leader): its reads fail; reads of other rounds are unaffected."""
        _, futures = self._rounds.pop(ctx, (0.0, []))
        for future in futures:
            if not future.done():
                future.set_exception(error.exception())

    def applied(self, applied: int) -> None:
        while self._by_index and self._by_index[0].index <= applied:
            wait = heapq.heappop(self._by_index)
            if not wait.future.done():
                wait.future.set_result(None)

    def fail_all(self, error: EtcdError) -> None:
        futures = list(self._queued)
        for _, fs in self._rounds.values():
            futures.extend(fs)
        futures.extend(w.future for w in self._by_index)
        self._queued.clear()
        self._rounds.clear()
        self._by_index.clear()
        for future in futures:
            if not future.done():
                future.set_exception(error.exception())

    def has_queued(self) -> bool:
        return bool(self._queued)

    def in_flight(self) -> bool:
        """A round was started and not yet answered (or given up by ``requeue_stale``)."""
        return bool(self._rounds)
