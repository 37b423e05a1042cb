"""Fan-out of applied revisions to watchers, with catch-up from history and bounded per-watcher buffers.

The node publishes every applied revision's events once (``Backend.subscribe_applied``); the hub matches them
against every registered watcher and queues them per watcher. A watcher that starts in the past first reads
the MVCC history (``Backend.events_since``) and then takes live events; the two meet at a revision cursor
(``_Watcher.next_rev``) that only ever moves forward, so the boundary can neither drop nor repeat a revision:
whatever history returned is skipped when it is published again, and nothing published before the read is
missed because the read happens synchronously on the loop that publishes.

Publishing never blocks the node: it only appends to bounded queues. A watcher whose queue overflows (its
client reads too slowly) is canceled with a ``cancel_reason`` naming the revision to resume from — never
silently skipped, which is how etcd lost events under stream starvation (#17529).

A ``WatchStream`` (one gRPC Watch call) hands its output to the service in rounds (``WatchStream.next``):
control replies first (created, canceled, progress notifications), then one batch per watcher with work,
round-robin, so one busy watcher cannot starve the others on its stream. A batch holds whole revisions only.
Progress answers claim a revision only once every event up to it has been handed out ahead of them on the
same stream (etcd #15220), and never a lower one than a previous answer (etcd #15271).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from raftkv import errors
from raftkv.server.backend import Backend, RevisionEvents
from raftkv.proto import kv_pb2

#: ``watch_id`` of stream-wide progress replies (answers to ``progress_request``), as in etcd.
PROGRESS_WATCH_ID = -1

#: Queued events a watcher may accumulate (beyond its initial catch-up) before it is canceled as too slow.
DEFAULT_MAX_PENDING_EVENTS = 100_000

#: Target size of one reply's events; a single revision larger than this is still sent whole.
DEFAULT_MAX_BATCH_BYTES = 1 << 20

# etcd's texts (mvcc/watcher.go) for creates the store refuses.
REASON_EMPTY_RANGE = "mvcc: watcher range is empty"
REASON_DUPLICATE_ID = "mvcc: duplicate watch ID provided on the WatchStream"

_PUT = kv_pb2.Event.EventType.PUT
_DELETE = kv_pb2.Event.EventType.DELETE


class StreamClosed(Exception):
    """The stream (or the whole hub) was closed; nothing more will be delivered."""


@dataclass(frozen=True, slots=True)
class WatchSpec:
    """What a watcher wants, with etcd's key-range conventions.

    ``range_end`` empty = the single ``key``; ``b"\\0"`` = every key >= ``key``; otherwise [key, range_end).
    ``start_revision`` 0 = from the next revision.
    """

    key: bytes
    range_end: bytes = b""
    start_revision: int = 0
    prev_kv: bool = False
    no_put: bool = False
    no_delete: bool = False
    progress_notify: bool = False

    def matches(self, key: bytes) -> bool:
        if not self.range_end:
            return key == self.key
        if self.range_end == b"\0":
            return key >= self.key
        return self.key <= key < self.range_end

    def is_empty_range(self) -> bool:
        return bool(self.range_end) and self.range_end != b"\0" and self.key >= self.range_end

    def wants(self, event: kv_pb2.Event) -> bool:
        if event.type == _PUT:
            return not self.no_put
        assert event.type == _DELETE, event.type
        return not self.no_delete


@dataclass(frozen=True, slots=True)
class Delivery:
    """One reply for the service to send, protocol-neutral.

    ``revision`` goes into the reply header: for events and progress it is a revision up to which every
    event of that watcher (stream, for ``PROGRESS_WATCH_ID``) has been handed out, this reply included.
    """

    watch_id: int
    revision: int
    events: tuple[kv_pb2.Event, ...] = ()
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    cancel_reason: str = ""


class _Watcher:
    """One watch: its spec, its queue of whole filtered revisions, and the revision cursor."""

    __slots__ = ("watch_id", "spec", "stream", "pending", "pending_events", "backlog_revs", "backlog_events",
                 "next_rev")

    def __init__(self, watch_id: int, spec: WatchSpec, stream: WatchStream, next_rev: int) -> None:
        self.watch_id = watch_id
        self.spec = spec
        self.stream = stream
        self.pending: deque[RevisionEvents] = deque()
        self.pending_events = 0
        # The first ``backlog_revs`` queued revisions came from the catch-up read: not counted as lag.
        self.backlog_revs = 0
        self.backlog_events = 0
        #: Lowest revision not yet queued or skipped: every matching event below it is queued or handed out.
        self.next_rev = next_rev

    def select(self, revision: RevisionEvents) -> RevisionEvents | None:
        """The events of ``revision`` this watcher wants, shaped as it asked (prev_kv stripped unless wanted)."""
        spec = self.spec
        chosen = [e for e in revision.events if spec.matches(e.kv.key) and spec.wants(e)]
        if not chosen:
            return None
        if not spec.prev_kv:
            chosen = [_without_prev_kv(e) for e in chosen]
        return RevisionEvents(revision.revision, tuple(chosen))

    def enqueue(self, revision: RevisionEvents, backlog: bool) -> None:
        assert revision.revision >= self.next_rev, (revision.revision, self.next_rev)
        self.next_rev = revision.revision + 1
        selected = self.select(revision)
        if selected is None:
            return
        self.pending.append(selected)
        self.pending_events += len(selected.events)
        if backlog:
            self.backlog_revs += 1
            self.backlog_events += len(selected.events)

    def lag(self) -> int:
        """Queued live events: what a slow reader has let pile up since catching up."""
        return self.pending_events - self.backlog_events

    def take_batch(self, max_bytes: int) -> tuple[RevisionEvents, ...]:
        """Whole revisions from the front of the queue, at least one, up to about ``max_bytes`` of events."""
        batch: list[RevisionEvents] = []
        size = 0
        while self.pending:
            head = self.pending[0]
            head_size = sum(e.ByteSize() for e in head.events)
            if batch and size + head_size > max_bytes:
                break
            self.pending.popleft()
            batch.append(head)
            size += head_size
            self.pending_events -= len(head.events)
            if self.backlog_revs:
                self.backlog_revs -= 1
                self.backlog_events -= len(head.events)
        return tuple(batch)

    def delivered_through(self, published: int) -> int:
        """Highest revision R such that every matching event <= R has been handed out."""
        through = self.pending[0].revision - 1 if self.pending else self.next_rev - 1
        return min(through, published)


class WatchHub:
    """All watchers of one node, fed by the node's applied revisions from construction on.

    Construct it once the node's state machine is open (``current_revision`` must be meaningful).
    """

    def __init__(
        self,
        backend: Backend,
        max_pending_events: int = DEFAULT_MAX_PENDING_EVENTS,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    ) -> None:
        self._backend = backend
        self.max_pending_events = max_pending_events
        self.max_batch_bytes = max_batch_bytes
        self._watchers: set[_Watcher] = set()
        self._streams: set[WatchStream] = set()
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

    def open_stream(self) -> WatchStream:
        stream = WatchStream(self)
        self._streams.add(stream)
        return stream

    def progress(self, stream: WatchStream) -> int:
        """Revision R such that every event <= R of every watcher on ``stream`` has been handed out."""
        return stream.progress()

    def watcher_count(self) -> int:
        return len(self._watchers)

    # --- called by WatchStream ------------------------------------------------------------------------
    def _register(self, watcher: _Watcher) -> int | None:
        """Catch ``watcher`` up from history and make it live; returns the compact revision if too late.

        Synchronous on purpose: no revision can be published between the history read and joining the
        live set, so the catch-up/live boundary needs no locking.
        """
        if watcher.next_rev <= self._published:
            compact_revision = self._catch_up(watcher, backlog=True)
            if compact_revision is not None:
                return compact_revision
        self._watchers.add(watcher)
        return None

    def _catch_up(self, watcher: _Watcher, backlog: bool) -> int | None:
        """Queue the watcher's events from history, from its cursor to the last applied revision; returns
        the compact revision instead when the history it needs is gone."""
        try:
            history = self._backend.events_since(watcher.next_rev, watcher.spec.key, watcher.spec.range_end)
        except errors.EtcdException as exc:
            if exc.error != errors.COMPACTED:
                raise
            return max(self._backend.compact_revision(), 1)
        for revision in history:
            watcher.enqueue(revision, backlog=backlog)
        # History covers everything applied so far, matching or not (possibly some not yet published).
        watcher.next_rev = max(watcher.next_rev, self._published + 1, self._backend.current_revision() + 1)
        return None

    def _resync(self) -> None:
        """Revisions were applied without being published (a snapshot was installed): every watcher
        catches up from history, or is canceled with the compact revision if its history is gone."""
        for watcher in list(self._watchers):
            compact_revision = self._catch_up(watcher, backlog=False)
            if compact_revision is not None:
                watcher.stream._end_compacted(watcher, compact_revision)
            elif watcher.pending:
                watcher.stream._wake()

    def _unregister(self, watcher: _Watcher) -> None:
        self._watchers.discard(watcher)

    def _forget_stream(self, stream: WatchStream) -> None:
        self._streams.discard(stream)

    def _publish(self, revision: RevisionEvents) -> None:
        """The node applied ``revision``: queue it for every interested watcher. Never blocks."""
        assert revision.revision > self._published, (revision.revision, self._published)
        if revision.revision > self._published + 1:
            # Every revision has events, so a skipped one was never published: fill the gap from history.
            self._resync()
        self._published = revision.revision
        for watcher in list(self._watchers):
            if revision.revision < watcher.next_rev:
                continue  # already read from history, or before the watcher's start revision
            watcher.enqueue(revision, backlog=False)
            if watcher.lag() > self.max_pending_events:
                watcher.stream._drop_slow(watcher)
            elif watcher.pending:
                watcher.stream._wake()


class WatchStream:
    """The watchers of one Watch call and the order in which their replies go out."""

    def __init__(self, hub: WatchHub) -> None:
        self._hub = hub
        self._watchers: dict[int, _Watcher] = {}
        self._control: deque[Delivery] = deque()
        self._wakeup = asyncio.Event()
        self._next_auto_id = 0
        self._progress_target: int | None = None
        self._last_progress = 0
        self._closed = False

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
        compact_revision = self._hub._register(watcher)
        if compact_revision is not None:
            self._end_compacted(watcher, compact_revision)
        self._wake()
        return watch_id

    def cancel(self, watch_id: int) -> bool:
        """Stop a watcher at the client's request; the canceled reply follows. False if the id is unknown."""
        self._check_open()
        watcher = self._watchers.pop(watch_id, None)
        if watcher is None:
            return False
        self._hub._unregister(watcher)
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
        """Periodic tick: an idle watcher that asked for ``progress_notify`` learns how far it is."""
        self._check_open()
        published = self._hub.published_revision
        for watcher in self._watchers.values():
            if watcher.spec.progress_notify and not watcher.pending:
                self._control.append(Delivery(watcher.watch_id, watcher.delivered_through(published)))
        self._wake()

    def close(self) -> None:
        """Drop every watcher of the stream (the call ended); a waiting ``next`` raises ``StreamClosed``."""
        if self._closed:
            return
        self._closed = True
        for watcher in self._watchers.values():
            self._hub._unregister(watcher)
        self._watchers.clear()
        self._control.clear()
        self._hub._forget_stream(self)
        self._wakeup.set()

    # --- replies --------------------------------------------------------------------------------------
    async def next(self) -> list[Delivery]:
        """Wait for the next round of replies, in the order they must be sent."""
        while True:
            out = self.poll()
            if out:
                return out
            self._wakeup.clear()
            await self._wakeup.wait()

    def poll(self) -> list[Delivery]:
        """The next round of replies if there is one now (empty list otherwise); never waits."""
        self._check_open()
        return self._round()

    def progress(self) -> int:
        """Revision R such that every event <= R of every watcher on the stream has been handed out."""
        published = self._hub.published_revision
        return min((w.delivered_through(published) for w in self._watchers.values()), default=published)

    def _round(self) -> list[Delivery]:
        out = list(self._control)
        self._control.clear()
        published = self._hub.published_revision
        for watcher in self._fair_order():
            if not watcher.pending:
                continue
            batch = watcher.take_batch(self._hub.max_batch_bytes)
            events = tuple(e for revision in batch for e in revision.events)
            out.append(Delivery(watcher.watch_id, watcher.delivered_through(published), events=events))
        if self._progress_target is not None:
            revision = self.progress()
            if revision >= max(self._progress_target, self._last_progress):
                self._progress_target = None
                self._last_progress = revision
                out.append(Delivery(PROGRESS_WATCH_ID, revision))
        return out

    def _fair_order(self) -> Iterable[_Watcher]:
        """Every watcher once per round, starting one further along each round."""
        watchers = list(self._watchers.values())
        if len(watchers) > 1:
            # Rotate by moving the first to the back of the (insertion-ordered) dict.
            first = watchers[0]
            del self._watchers[first.watch_id]
            self._watchers[first.watch_id] = first
        return watchers

    def _end_compacted(self, watcher: _Watcher, compact_revision: int) -> None:
        """The history the watcher needs was compacted: cancel it the way etcd does (clients re-list)."""
        self._watchers.pop(watcher.watch_id, None)
        self._hub._unregister(watcher)
        watcher.pending.clear()
        self._control.append(
            Delivery(watcher.watch_id, self._hub.published_revision, canceled=True,
                     compact_revision=compact_revision, cancel_reason=errors.COMPACTED.message)
        )
        self._wake()

    def refuse(self, reason: str) -> int:
        """A create that will not be served: etcd answers created-and-canceled with id -1 and the reason."""
        self._control.append(
            Delivery(-1, self._hub.published_revision, created=True, canceled=True, cancel_reason=reason)
        )
        self._wake()
        return -1

    def _drop_slow(self, watcher: _Watcher) -> None:
        """Cancel a watcher that let too many events pile up, telling the client where to resume."""
        published = self._hub.published_revision
        resume = watcher.delivered_through(published) + 1
        self._watchers.pop(watcher.watch_id, None)
        self._hub._unregister(watcher)
        watcher.pending.clear()
        self._control.append(
            Delivery(watcher.watch_id, resume - 1, canceled=True,
                     cancel_reason=f"raftkv: watcher fell more than {self._hub.max_pending_events} events "
                                   f"behind; watch again from revision {resume}")
        )
        self._wake()

    def _wake(self) -> None:
        self._wakeup.set()

    def _check_open(self) -> None:
        if self._closed:
            raise StreamClosed()


def _without_prev_kv(event: kv_pb2.Event) -> kv_pb2.Event:
    if not event.HasField("prev_kv"):
        return event
    return kv_pb2.Event(type=event.type, kv=event.kv)
