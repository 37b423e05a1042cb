"""Fan-out of applied revisions to watchers: live events for those that keep up, history replay paced by the
reader for those that do not, and a memory bound on everything queued.

The node publishes every applied revision's events once (``Backend.subscribe_applied``). A watcher is either
*synced* — it has seen every revision up to the last published one and takes live events into its queue —
or *replaying*: it reads the MVCC history (``Backend.history_page``) one bounded step at a time, and only
when its stream comes back for more. The two meet at a revision cursor (``_Watcher.next_rev``) that only
moves forward, so neither path can drop or repeat a revision: a watcher joins the live set once its history
read has reached the published revision, and whatever it read ahead of the live stream is skipped when it
is published.

Why replay is pulled, never pushed: a watcher far in the past (200 watchers from revision 1 over a large
history) would otherwise copy the whole history into memory at creation, and reading it would hold the
event loop for seconds — costing the member its leadership. Here a step reads at most
``WatchLimits.replay_bytes`` of history, steps of all streams take turns in one lane (so the Raft loop runs
between any two), and a step is taken only for a stream whose client read what it was given: gRPC stops
taking replies from a stream whose client does not read, and that stream's handler stops asking.

Why a synced watcher that falls behind is switched back to replay instead of being canceled or queued
without end: its queued events are still in history, so dropping the queue loses nothing but memory. The
bounds (``WatchLimits``) are per watcher, per stream (one Watch call) and per member; past one, the largest
queues go first. Only two things end a watch the client did not cancel, each with a reason as etcd gives
one: its history was compacted before it was replayed (``compact_revision`` set, clients re-list), or its
stream took nothing for ``stall_seconds`` while it was behind (the reason names the revision to resume
from). etcd 3.4 keeps such "victim" watchers forever; raftkv bounds them in time as well as in memory.

A ``WatchStream`` hands its output to the service in rounds (``WatchStream.next``): control replies first
(created, canceled, progress), then batches of whole revisions per watcher, round-robin and up to
``batch_bytes`` a round, so one busy watcher cannot starve the others on its stream. Progress answers claim
a revision only once every event up to it has been handed out ahead of them on the same stream (etcd
#15220), and never a lower one than a previous answer (etcd #15271).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable

from raftkv import errors
from raftkv.server.backend import Backend, RevisionEvents
from raftkv.server.watch_types import Delivery, WatchLimits, WatchSpec, event_bytes, without_prev_kv

log = logging.getLogger("raftkv.watch")

#: ``watch_id`` of stream-wide progress replies (answers to ``progress_request``), as in etcd.
PROGRESS_WATCH_ID = -1
#: The header revision of the reply that cancels a compacted watcher: none, as in etcd.
COMPACTED_REPLY_REVISION = 0

#: Control replies (created, canceled, progress) a stream holds before it stops taking requests.
MAX_CONTROL_BACKLOG = 1024

#: How often the hub looks for stalled streams (on publish; an idle member has nothing piling up).
STALL_SWEEP_SECONDS = 1.0

# etcd's texts (mvcc/watcher.go) for creates the store refuses.
REASON_EMPTY_RANGE = "mvcc: watcher range is empty"
REASON_DUPLICATE_ID = "mvcc: duplicate watch ID provided on the WatchStream"


class StreamClosed(Exception):
    """The stream (or the whole hub) was closed; nothing more will be delivered."""


class _Watcher:
    """One watch: its spec, its queue of whole filtered revisions, and the revision cursor."""

    __slots__ = ("watch_id", "spec", "stream", "pending", "pending_bytes", "next_rev", "synced", "ended")

    def __init__(self, watch_id: int, spec: WatchSpec, stream: WatchStream, next_rev: int) -> None:
        self.watch_id = watch_id
        self.spec = spec
        self.stream = stream
        self.pending: deque[tuple[RevisionEvents, int]] = deque()  # (revision, its estimated bytes)
        self.pending_bytes = 0
        #: Lowest revision not yet queued or skipped: every matching event below it is queued or handed out.
        self.next_rev = next_rev
        #: In the hub's live set (takes published revisions); otherwise it replays history.
        self.synced = False
        self.ended = False

    def select(self, revision: RevisionEvents) -> RevisionEvents | None:
        """The events of ``revision`` this watcher wants, shaped as it asked (prev_kv stripped unless wanted)."""
        spec = self.spec
        chosen = [e for e in revision.events if spec.matches(e.kv.key) and spec.wants(e)]
        if not chosen:
            return None
        if not spec.prev_kv:
            chosen = [without_prev_kv(e) for e in chosen]
        return RevisionEvents(revision.revision, tuple(chosen))

    def enqueue(self, revision: RevisionEvents) -> int:
        """Queue what the watcher wants of ``revision`` (at or past its cursor); returns the bytes queued."""
        assert revision.revision >= self.next_rev, (revision.revision, self.next_rev)
        self.next_rev = revision.revision + 1
        selected = self.select(revision)
        if selected is None:
            return 0
        size = sum(event_bytes(e) for e in selected.events)
        self.pending.append((selected, size))
        self.pending_bytes += size
        return size

    def take_batch(self, max_bytes: int) -> tuple[list[RevisionEvents], int]:
        """Whole revisions from the front of the queue, at least one, up to about ``max_bytes``."""
        batch: list[RevisionEvents] = []
        size = 0
        while self.pending:
            head, head_size = self.pending[0]
            if batch and size + head_size > max_bytes:
                break
            self.pending.popleft()
            batch.append(head)
            size += head_size
        self.pending_bytes -= size
        return batch, size

    def drop_pending(self) -> int:
        """Forget the queue and rewind the cursor to its first revision (history still has it); returns
        the bytes freed."""
        if self.pending:
            self.next_rev = self.pending[0][0].revision
        freed = self.pending_bytes
        self.pending.clear()
        self.pending_bytes = 0
        return freed

    def delivered_through(self, published: int) -> int:
        """Highest revision R such that every matching event <= R has been handed out."""
        through = self.pending[0][0].revision - 1 if self.pending else self.next_rev - 1
        return min(through, published)

    def behind(self, published: int) -> bool:
        """Whether events (queued, or still in history) wait for this watcher."""
        return bool(self.pending) or self.next_rev <= published


class WatchHub:
    """All watchers of one node, fed by the node's applied revisions from construction on.

    Construct it once the node's state machine is open (``current_revision`` must be meaningful), on the
    loop that serves the streams. ``clock`` (seconds, monotonic) times stalled streams.
    """

    def __init__(
        self,
        backend: Backend,
        limits: WatchLimits = WatchLimits(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backend = backend
        self.limits = limits
        self._clock = clock
        # Insertion-ordered (dicts as sets), so that the same operations always give the same deliveries.
        self._synced: dict[_Watcher, None] = {}
        self._replaying: dict[_Watcher, None] = {}
        self._streams: dict[WatchStream, None] = {}
        self._queued_bytes = 0  # in every watcher's queue
        self._inflight_bytes = 0  # handed to the service by streams whose handler has not come back yet
        # One replay step at a time, member-wide, so the Raft loop runs between any two of them.
        self._replay_lane = asyncio.Lock()
        self._lane_free_at = 0.0
        self._room = asyncio.Event()  # set while memory is below limits.member_bytes
        self._room.set()
        self._next_sweep = clock() + STALL_SWEEP_SECONDS
        #: Watchers switched from live events to replay because they fell behind (a metric).
        self.fell_behind_total = 0
        #: Bytes of history read to replay it to watchers (a metric).
        self.replayed_bytes_total = 0
        # Subscribing at once, with the revision it starts from, leaves no window in which an applied
        # revision could be neither in the history a watcher reads nor in the live stream.
        self._published = backend.current_revision()
        self._unsubscribe: Callable[[], None] | None = backend.subscribe_applied(self._publish)

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def published_revision(self) -> int:
        """The latest revision the hub has seen applied (published, or current when it was built)."""
        return self._published

    def close(self) -> None:
        """Stop; every open stream's ``next`` raises ``StreamClosed``."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for stream in list(self._streams):
            stream.close()
        self._room.set()  # waiters wake, find their stream closed

    def open_stream(self) -> WatchStream:
        stream = WatchStream(self)
        self._streams[stream] = None
        return stream

    def progress(self, stream: WatchStream) -> int:
        """Revision R such that every event <= R of every watcher on ``stream`` has been handed out."""
        return stream.progress()

    def watcher_count(self) -> int:
        return len(self._synced) + len(self._replaying)

    def replaying_count(self) -> int:
        """Watchers reading history: new ones from the past, and those that fell behind."""
        return len(self._replaying)

    def memory_bytes(self) -> int:
        """Estimated bytes of unsent events: queued, plus handed to streams whose handler has not come back."""
        return self._queued_bytes + self._inflight_bytes

    # --- called by WatchStream ------------------------------------------------------------------------
    def _register(self, watcher: _Watcher) -> None:
        """A new watcher starts live if it starts after the published revision, else it replays history
        (in steps its stream takes, never here: creating a watch costs no history read)."""
        if watcher.next_rev > self._published:
            watcher.synced = True
            self._synced[watcher] = None
        else:
            self._replaying[watcher] = None

    def _unregister(self, watcher: _Watcher) -> None:
        self._synced.pop(watcher, None)
        self._replaying.pop(watcher, None)

    def _forget_stream(self, stream: WatchStream) -> None:
        self._streams.pop(stream, None)

    def _account(self, stream: WatchStream, queued: int, inflight: int = 0) -> None:
        stream.queued_bytes += queued
        self._queued_bytes += queued
        self._inflight_bytes += inflight
        if self.memory_bytes() < self.limits.member_bytes:
            self._room.set()
        else:
            self._room.clear()

    async def _take_replay_turn(self, stream: WatchStream) -> None:
        """One replay step for ``stream``, in the member-wide lane: steps never overlap, each is followed by
        a rest ``replay_rest`` times as long as it took, and none starts while memory is at its bound."""
        async with self._replay_lane:
            rest = self._lane_free_at - self._clock()
            if rest > 0:
                await asyncio.sleep(rest)
            await self._room.wait()
            stream._check_open()
            started = self._clock()
            stream._replay_step()
            self._lane_free_at = self._clock() + (self._clock() - started) * self.limits.replay_rest
        await asyncio.sleep(0)  # the Raft loop and other streams run between two steps

    def _replay(self, watcher: _Watcher, max_bytes: int) -> int:
        """One history step for a replaying watcher with an empty queue; returns the bytes read. The watcher
        goes live once the step reaches the published revision, or ends if its history was compacted."""
        spec = watcher.spec
        try:
            page = self._backend.history_page(
                watcher.next_rev, spec.key, spec.range_end, prev_kv=spec.prev_kv, max_bytes=max_bytes
            )
        except errors.EtcdException as exc:
            if exc.error != errors.COMPACTED:
                raise
            watcher.stream._end_compacted(watcher, max(self._backend.compact_revision(), 1))
            return 0
        self.replayed_bytes_total += page.scanned_bytes
        queued = 0
        for revision, events in page.revisions:
            queued += watcher.enqueue(RevisionEvents(revision, tuple(events)))
        self._account(watcher.stream, queued)
        # The page ends at a revision boundary or at the end of history as of its read, which may be past
        # the published revision (applied, not yet published): those are skipped when published.
        watcher.next_rev = max(watcher.next_rev, page.next_revision)
        if watcher.next_rev > self._published:
            self._replaying.pop(watcher, None)
            self._synced[watcher] = None
            watcher.synced = True
        return page.scanned_bytes

    def _fall_behind(self, watcher: _Watcher, keep_queue: bool = False) -> None:
        """Stop feeding ``watcher`` live events: it replays from its cursor (rewound to its queue's first
        revision unless the queue is kept) once its stream reads again."""
        if not keep_queue:
            self._account(watcher.stream, -watcher.drop_pending())
        if watcher.synced:
            watcher.synced = False
            self._synced.pop(watcher, None)
            self._replaying[watcher] = None
            if not keep_queue:
                self.fell_behind_total += 1
        watcher.stream._wake()

    def _shed(self, watchers: Iterable[_Watcher], total: Callable[[], int], target: int) -> None:
        """Switch the watchers with the largest queues to replay until ``total()`` is down to ``target``."""
        for watcher in sorted(watchers, key=lambda w: w.pending_bytes, reverse=True):
            if total() <= target or not watcher.pending:
                return
            self._fall_behind(watcher)

    def _publish(self, revision: RevisionEvents) -> None:
        """The node applied ``revision``: queue it for every live watcher that wants it. Never blocks."""
        assert revision.revision > self._published, (revision.revision, self._published)
        if revision.revision > self._published + 1:
            # Revisions were applied without being published (a snapshot was installed): every live
            # watcher reads them from history after what it has queued.
            for watcher in list(self._synced):
                self._fall_behind(watcher, keep_queue=True)
        self._published = revision.revision
        limits = self.limits
        for watcher in list(self._synced):
            if not watcher.synced or revision.revision < watcher.next_rev:
                # Shed earlier in this loop; or already read from history, or before its start revision.
                continue
            queued = watcher.enqueue(revision)
            if not queued:
                continue
            stream = watcher.stream
            self._account(stream, queued)
            if watcher.pending_bytes > limits.watcher_bytes:
                self._fall_behind(watcher)
            elif stream.queued_bytes > limits.stream_bytes:
                self._shed(list(stream._watchers.values()), stream.queued, limits.stream_bytes // 2)
            stream._wake()
        if self.memory_bytes() > limits.member_bytes:
            self._shed([*self._synced, *self._replaying], self.memory_bytes, limits.member_bytes // 2)
        self._sweep_stalled()

    def _sweep_stalled(self) -> None:
        now = self._clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + STALL_SWEEP_SECONDS
        for stream in list(self._streams):
            if stream.away_since is not None and now - stream.away_since >= self.limits.stall_seconds:
                stream._cancel_behind(self.limits.stall_seconds)


class WatchStream:
    """The watchers of one Watch call and the order in which their replies go out."""

    def __init__(self, hub: WatchHub) -> None:
        self._hub = hub
        self._watchers: dict[int, _Watcher] = {}
        self._control: deque[Delivery] = deque()
        self._wakeup = asyncio.Event()
        self._control_taken = asyncio.Event()
        self._next_auto_id = 0
        self._progress_target: int | None = None
        self._last_progress = 0
        self._closed = False
        #: Estimated bytes queued in this stream's watchers.
        self.queued_bytes = 0
        self._inflight = 0
        self._round_bytes = 0  # events of the last round
        #: When the stream last handed out replies without being asked for more since (None: it is waiting).
        self.away_since: float | None = None

    def queued(self) -> int:
        return self.queued_bytes

    # --- requests from the client -------------------------------------------------------------------------
    def create(self, spec: WatchSpec, watch_id: int = 0) -> int:
        """Register a watcher; its ``created`` reply is queued before any of its events.

        ``watch_id`` 0 picks the lowest free id counting up from 0 (ids are per stream); a non-zero id is
        the client's choice (etcd 3.4). Returns the id, or -1 when the create was refused (the refusal is
        queued as a created-and-canceled reply, as etcd does).
        """
        self._check_open()
        published = self._hub.published_revision
        if spec.is_empty_range():
            return self.refuse(REASON_EMPTY_RANGE)
        if watch_id == 0:
            while self._next_auto_id in self._watchers:
                self._next_auto_id += 1
            watch_id = self._next_auto_id
            self._next_auto_id += 1
        elif watch_id in self._watchers:
            return self.refuse(REASON_DUPLICATE_ID)
        start = spec.start_revision if spec.start_revision > 0 else published + 1
        watcher = _Watcher(watch_id, spec, self, next_rev=start)
        self._control.append(Delivery(watch_id, published, created=True))
        self._watchers[watch_id] = watcher
        self._hub._register(watcher)
        self._wake()
        return watch_id

    def cancel(self, watch_id: int) -> bool:
        """Stop a watcher at the client's request; the canceled reply follows. False if the id is unknown."""
        self._check_open()
        watcher = self._watchers.get(watch_id)
        if watcher is None:
            return False
        self._remove(watcher)
        self._control.append(Delivery(watch_id, self._hub.published_revision, canceled=True))
        self._wake()
        return True

    def request_progress(self) -> None:
        """Ask for a stream-wide progress reply (``PROGRESS_WATCH_ID``).

        The reply waits until every event up to the revision applied at the time of the request has been
        handed out ahead of it, so it is as fresh as the request and never runs ahead of the events.
        """
        self._check_open()
        if self._progress_target is None:
            self._progress_target = self._hub.published_revision
        self._wake()

    def notify_progress(self) -> None:
        """Periodic tick: an idle live watcher that asked for ``progress_notify`` learns how far it is."""
        self._check_open()
        published = self._hub.published_revision
        for watcher in self._watchers.values():
            if watcher.spec.progress_notify and watcher.synced and not watcher.pending:
                self._control.append(Delivery(watcher.watch_id, watcher.delivered_through(published)))
        self._wake()

    async def accepting(self) -> None:
        """Return once the stream takes another request: not while ``MAX_CONTROL_BACKLOG`` control replies
        wait, so a client that sends creates without reading the answers is held up here (and its requests
        then back up in gRPC's flow control) instead of growing the member's memory."""
        while len(self._control) >= MAX_CONTROL_BACKLOG:
            self._check_open()
            self._control_taken.clear()
            await self._control_taken.wait()
        self._check_open()

    def close(self) -> None:
        """Drop every watcher of the stream (the call ended); a waiting ``next`` raises ``StreamClosed``."""
        if self._closed:
            return
        self._closed = True
        for watcher in list(self._watchers.values()):
            self._remove(watcher)
        self._control.clear()
        self._came_back()
        self._hub._forget_stream(self)
        self._wakeup.set()
        self._control_taken.set()

    # --- replies --------------------------------------------------------------------------------------
    async def next(self) -> list[Delivery]:
        """Wait for the next round of replies, in the order they must be sent. Calling it again says the
        previous round was sent: only then does the stream replay more history."""
        self._came_back()
        while True:
            self._check_open()
            out = self._round()
            if out:
                return self._hand_out(out)
            if self._wants_replay():
                await self._hub._take_replay_turn(self)
                continue
            self._wakeup.clear()
            await self._wakeup.wait()

    def poll(self) -> list[Delivery]:
        """The next round of replies if there is one now (empty list otherwise); never waits. Replays
        history as ``next`` does, without taking turns with other streams."""
        self._check_open()
        self._came_back()
        while True:
            out = self._round()
            if out or not self._wants_replay() or not self._hub._room.is_set():
                return self._hand_out(out)
            self._replay_step()

    def progress(self) -> int:
        """Revision R such that every event <= R of every watcher on the stream has been handed out."""
        published = self._hub.published_revision
        return min((w.delivered_through(published) for w in self._watchers.values()), default=published)

    def _came_back(self) -> None:
        """The handler asks for more: what it was handed has been sent."""
        if self._inflight:
            self._hub._account(self, 0, -self._inflight)
            self._inflight = 0
        self.away_since = None

    def _hand_out(self, out: list[Delivery]) -> list[Delivery]:
        if out:
            self._inflight = self._round_bytes
            self._hub._account(self, 0, self._inflight)
            self.away_since = self._hub._clock()
        return out

    def _wants_replay(self) -> bool:
        return any(not w.synced and not w.pending for w in self._watchers.values())

    def _replay_step(self) -> None:
        """Read history for replaying watchers with empty queues, about ``replay_bytes`` in all."""
        budget = self._hub.limits.replay_bytes
        for watcher in list(self._watchers.values()):
            if budget <= 0:
                return
            if not watcher.ended and not watcher.synced and not watcher.pending:
                budget -= max(self._hub._replay(watcher, budget), 1)

    def _round(self) -> list[Delivery]:
        out = list(self._control)
        if out:
            self._control.clear()
            self._control_taken.set()
        published = self._hub.published_revision
        budget = self._hub.limits.batch_bytes
        served: list[_Watcher] = []
        for watcher in list(self._watchers.values()):
            if budget <= 0:
                break
            if not watcher.pending:
                continue
            batch, size = watcher.take_batch(budget)
            self._hub._account(self, -size)
            budget -= size
            events = tuple(e for revision in batch for e in revision.events)
            out.append(Delivery(watcher.watch_id, watcher.delivered_through(published), events=events))
            served.append(watcher)
        self._round_bytes = self._hub.limits.batch_bytes - budget
        for watcher in served:  # to the back: next round starts with those that were not served
            del self._watchers[watcher.watch_id]
            self._watchers[watcher.watch_id] = watcher
        if self._progress_target is not None:
            revision = self.progress()
            if revision >= max(self._progress_target, self._last_progress):
                self._progress_target = None
                self._last_progress = revision
                out.append(Delivery(PROGRESS_WATCH_ID, revision))
        return out

    def _remove(self, watcher: _Watcher) -> None:
        del self._watchers[watcher.watch_id]
        self._hub._unregister(watcher)
        self._hub._account(self, -watcher.drop_pending())
        watcher.ended = True

    def _end_compacted(self, watcher: _Watcher, compact_revision: int) -> None:
        """The history the watcher needs was compacted: cancel it the way etcd does (clients re-list), with
        ``compact_revision`` set and, as etcd's, no ``cancel_reason`` and no revision in the header (etcd's
        watchable store sends this reply without one)."""
        self._remove(watcher)
        self._control.append(
            Delivery(watcher.watch_id, COMPACTED_REPLY_REVISION, canceled=True, compact_revision=compact_revision)
        )
        self._wake()

    def refuse(self, reason: str, watch_id: int = -1) -> int:
        """A create that will not be served: etcd answers created-and-canceled with the reason, and with
        id -1 unless the refusal names the id the client asked for (permission denied, as etcd)."""
        self._control.append(
            Delivery(watch_id, self._hub.published_revision, created=True, canceled=True, cancel_reason=reason)
        )
        self._wake()
        return -1

    def _cancel_behind(self, stalled_for: float) -> None:
        """The stream took nothing for ``stalled_for`` seconds: cancel its watchers that events wait for,
        telling each client where to resume."""
        published = self._hub.published_revision
        for watcher in [w for w in self._watchers.values() if w.behind(published)]:
            resume = watcher.delivered_through(published) + 1
            self._remove(watcher)
            log.warning("watch %d canceled: its stream took no events for %gs", watcher.watch_id, stalled_for)
            self._control.append(
                Delivery(watcher.watch_id, resume - 1, canceled=True,
                         cancel_reason=f"raftkv: the watch stream took no events for {stalled_for:g}s while "
                                       f"this watcher was behind; watch again from revision {resume}")
            )
        self._wake()

    def _wake(self) -> None:
        self._wakeup.set()

    def _check_open(self) -> None:
        if self._closed:
            raise StreamClosed()
