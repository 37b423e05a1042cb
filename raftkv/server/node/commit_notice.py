"""When a leader tells its followers a commit index that no append has carried to them yet.

etcd-io/raft sends every follower an append the moment an acknowledgement moves the commit index, empty if
the follower already holds every entry. With one client writing in a loop that doubles the peer traffic of
each put: the append of the entry and its answer, then the empty append that carries its commit and that
answer too, each a message through TLS and gRPC and a turn of both loops, and on the follower an apply of
its own. Yet the next append, which carries the commit index anyway, follows within about a client round
trip. So the core is configured to defer the notice (``Config.defer_commit_notice``) and this driver sends
it only if ``delay`` passes with the commit index still owed to someone (``RawNode.commit_notice_pending``).

What the delay costs: a follower applies an entry up to ``delay`` later when no write follows it, so a
serializable read or a watch served by a follower sees it that much later; what the leader answers, and
when, is unchanged (it applies on commit, as before), and a follower's linearizable read waits only for
the commit index its ReadIndex answer names, which the round's heartbeats carry. Nothing else depends on
when a follower learns the commit index: it is a hint the leader repeats in every append and heartbeat
(the heartbeat interval bounds the delay, so ``config.py`` keeps it below a quarter of it).

Measured on the 2-core reference machine, three members with mutual TLS, put c=1 (``python -m
raftkv.bench --workloads 'put c=1'``): 246 -> 291 puts/s and all members' CPU per put 5,100 -> 3,560 us
with the notice deferred outright. With this timer, fresh cluster per run: delay 0 -> 239, 232 puts/s and
5,245 / 5,502 us CPU per put over all members; 2 ms -> 256, 267/s (fires too often: the gap from commit to
the next append is often over 2 ms); 5 ms -> 279, 289/s and 3,761 / 3,646 us, p50 4.2 -> 3.4 ms. At c=64
throughput is unchanged within noise, and an open-loop 1000 puts/s had p99 65/48 -> 43/39 ms. The server
leaves it off by default (``--commit-notice-delay-ms 0``) until the simulator and cluster suites run with it.
"""

from __future__ import annotations

from collections.abc import Callable

from raftkv.server.node.world import Clock, Timer


class CommitNotice:
    """A timer, armed after a turn that left the commit index owed, that asks for the notice when it fires."""

    def __init__(self, clock: Clock, delay: float, wake: Callable[[], None]) -> None:
        assert delay > 0, "a zero delay means the core sends the notice itself (defer_commit_notice off)"
        self._clock = clock
        self._delay = delay
        self._wake = wake
        self._timer: Timer | None = None
        self._due = False

    def after_turn(self, owed: bool) -> None:
        """Called after each turn of the loop with whether a follower is owed the commit index. A turn whose
        appends carried it disarms the timer: left running, it would fire early for the next commit index."""
        if not owed:
            self.cancel()
        elif self._timer is None and not self._due:
            self._timer = self._clock.call_later(self._delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._due = True
        self._wake()

    def take_due(self) -> bool:
        """Whether the delay passed since the notice was first owed: the loop then calls ``notify_commit``
        (a no-op if appends carried it meanwhile)."""
        due, self._due = self._due, False
        return due

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
