"""Linearizable reads: queued reads become ReadIndex rounds, answered once the applied index reaches them.

A read waits for a round that *started after it arrived* (``ReadWaiters``), and is released only when this
member has applied everything up to the round's read index. The Raft loop feeds the rounds into the core
(``feed``, once per turn) and reports the core's read states and every advance of the applied index.

With the leader lease (``read_lease.py``, off by default) a leader that holds one serves a read from its
commit index at once, with no round and no loop turn; rounds then run only to renew the lease.
"""

from __future__ import annotations

from collections.abc import Callable

from raftkv import errors
from raftkv.core.rawnode import RawNode
from raftkv.core.types import ProposalDropped, ReadState
from raftkv.server.node.read_lease import ReadLease
from raftkv.server.node.refusals import dropped_error
from raftkv.server.node.world import Clock, Timer
from raftkv.server.waiters import ReadWaiters, within


class LinearizableReads:
    def __init__(
        self,
        member_id: int,
        base: int,
        raw: RawNode,
        clock: Clock,
        round_timeout: float,
        wake: Callable[[], None],
        lease: ReadLease | None = None,
        stale_reads_bug: bool = False,
    ) -> None:
        self._waiters = ReadWaiters(member_id, base)
        self._raw = raw
        self._lease = lease
        self._renew_lease = False  # a read under the lease found it past half: the next turn starts a round
        self._applied = raw.status().applied
        self.rounds_started = 0
        self.lease_reads = 0
        self._clock = clock
        self._round_timeout = round_timeout
        self._wake = wake
        self._stale_reads_bug = stale_reads_bug
        self._round_timer: Timer | None = None
        self._gap_waited = False  # the round timer fired: the next round may start, whatever the clock says

    async def barrier(self, timeout: float) -> None:
        """Return once this member applied everything committed before the call (raises TIMEOUT)."""
        if self._lease is not None:
            now = self._clock.now()
            index = self._lease.read_index(self._raw, now)
            if index is not None:
                self.lease_reads += 1
                if self._lease.renewal_due(now) and not self._renew_lease:
                    self._renew_lease = True
                    self._wake()
                if index > self._applied:
                    try:
                        await within(self._waiters.wait_applied(index), timeout)
                    except TimeoutError:
                        raise errors.TIMEOUT.exception() from None
                return
        future = self._waiters.enqueue()
        # Only a read that may start a round wakes the loop. While one is in flight (or the next one is timed)
        # a turn could do nothing for it: the round's answer wakes the loop for every read queued meanwhile
        # (``answered``), so a busy leader takes one turn per round, not one per read.
        if not self._waiters.in_flight() and self._round_timer is None:
            self._wake()
        try:
            await within(future, timeout)
        except TimeoutError:
            raise errors.TIMEOUT.exception() from None

    def feed(self, applied: int) -> None:
        """Start the next ReadIndex round if reads are queued (or the lease asks to be renewed) and none is in
        flight (one turn of the loop)."""
        raw = self._raw
        self._applied = applied
        gap_waited, self._gap_waited = self._gap_waited, False
        self._waiters.applied(applied)  # a lease read may wait on an index applied without a report (a snapshot)
        now = self._clock.now()
        self._waiters.requeue_stale(now, self._round_timeout)
        if not self._waiters.has_queued() and not self._renew_lease:
            return
        if self._stale_reads_bug:
            # PLANTED BUG (fault-injection self-test only): serve at once, without asking anybody.
            if (taken := self._waiters.take_queued(now)) is not None:
                self._waiters.answered(taken[0], 0, applied)
            return
        taken = self._waiters.take_queued(now, even_if_empty=self._renew_lease, gap_waited=gap_waited)
        if taken is not None:
            ctx, _ = taken
            self.rounds_started += 1
            self._renew_lease = False
            if self._lease is not None:
                self._lease.round_started(ctx, raw.leader_term(), now)
            try:
                raw.read_index(ctx)
            except ProposalDropped as exc:
                self._waiters.fail_round(ctx, dropped_error(exc))
        elif (due := self._waiters.round_due(now)) is not None and self._round_timer is None:
            self._round_timer = self._clock.call_later(due - now, self._start_due_round)

    def _start_due_round(self) -> None:
        self._round_timer = None
        self._gap_waited = True
        self._wake()

    def answered(self, read_states: list[ReadState], applied: int) -> None:
        self._applied = applied
        for rs in read_states:
            if self._lease is not None:
                self._lease.round_answered(rs.request_ctx, self._raw)
            self._waiters.answered(rs.request_ctx, rs.index, applied)
        self._waiters.applied(applied)
        if read_states and self._waiters.has_queued():
            self._wake()  # reads that arrived during the round start the next one (see ``barrier``)

    def applied(self, applied: int) -> None:
        self._applied = applied
        self._waiters.applied(applied)

    def leader_changed(self) -> None:
        """A new leader is known: ask it again for whatever the old one left unanswered (and whatever lease
        this member held is void)."""
        if self._lease is not None:
            self._lease.end()
            self._renew_lease = False
        self._waiters.requeue_in_flight()
        self._wake()

    def fail_all(self, error: errors.EtcdError) -> None:
        self._waiters.fail_all(error)

