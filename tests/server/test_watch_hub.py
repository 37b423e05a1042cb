"""The watch hub over an in-memory applied stream: catch-up/live boundary, buffers, atomicity, progress."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv import errors
from raftkv.server.backend import RevisionEvents
from raftkv.proto import kv_pb2
from raftkv.server.watch_hub import (
    PROGRESS_WATCH_ID,
    REASON_DUPLICATE_ID,
    REASON_EMPTY_RANGE,
    Delivery,
    StreamClosed,
    WatchHub,
    WatchSpec,
    WatchStream,
)

PUT = kv_pb2.Event.EventType.PUT
DELETE = kv_pb2.Event.EventType.DELETE


class AppliedLog:
    """A stand-in for the node's applied stream: MVCC history in a list, published after each apply.

    ``publish=False`` models a node that has applied a revision (visible to history reads) but not yet
    called its subscribers — the window in which a catch-up can see a revision before the live stream does.
    """

    def __init__(self) -> None:
        self.history: list[RevisionEvents] = []
        self.values: dict[bytes, kv_pb2.KeyValue] = {}
        self.compacted = 0
        self._subscribers: list[Callable[[RevisionEvents], None]] = []
        self._unpublished: list[RevisionEvents] = []

    # Backend surface used by the hub.
    def current_revision(self) -> int:
        return self.history[-1].revision if self.history else 1

    def compact_revision(self) -> int:
        return self.compacted

    def events_since(self, start: int, key: bytes, range_end: bytes) -> list[RevisionEvents]:
        if start <= self.compacted:
            raise errors.COMPACTED.exception()
        spec = WatchSpec(key, range_end)
        out = []
        for revision in self.history:
            if revision.revision >= start:
                events = tuple(e for e in revision.events if spec.matches(e.kv.key))
                if events:
                    out.append(RevisionEvents(revision.revision, events))
        return out

    def subscribe_applied(self, callback: Callable[[RevisionEvents], None]) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    # Writes.
    def apply(self, *changes: tuple[bytes, bytes | None], publish: bool = True) -> int:
        revision = self.current_revision() + 1
        events = []
        for key, value in changes:
            prev = self.values.get(key)
            if value is None:
                kv = kv_pb2.KeyValue(key=key, mod_revision=revision)
                self.values.pop(key, None)
                events.append(kv_pb2.Event(type=DELETE, kv=kv, prev_kv=prev))
            else:
                kv = kv_pb2.KeyValue(key=key, value=value, mod_revision=revision,
                                     create_revision=prev.create_revision if prev else revision,
                                     version=prev.version + 1 if prev else 1)
                self.values[key] = kv
                events.append(kv_pb2.Event(type=PUT, kv=kv, prev_kv=prev))
        applied = RevisionEvents(revision, tuple(events))
        self.history.append(applied)
        self._unpublished.append(applied)
        if publish:
            self.publish()
        return revision

    def publish(self) -> None:
        for revision in self._unpublished:
            for callback in list(self._subscribers):
                callback(revision)
        self._unpublished.clear()

    def install_snapshot(self) -> None:
        """Revisions arrive in bulk with a snapshot: in the history, never published one by one."""
        self._unpublished.clear()


def run(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test on a fresh loop (every hub stream lives on the loop that serves it)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return wrapper


def make_hub(**kwargs: Any) -> tuple[AppliedLog, WatchHub]:
    log = AppliedLog()
    hub = WatchHub(log, **kwargs)  # type: ignore[arg-type]
    return log, hub


def drain(stream: WatchStream) -> list[Delivery]:
    """Every reply the stream can produce now, round after round, without waiting for new writes."""
    out: list[Delivery] = []
    while batch := stream.poll():
        out += batch
    return out


def events_of(deliveries: list[Delivery], watch_id: int) -> list[tuple[int, bytes, int]]:
    return [
        (e.type, e.kv.key, e.kv.mod_revision)
        for d in deliveries
        if d.watch_id == watch_id
        for e in d.events
    ]


@run
async def test_created_reply_precedes_events_and_live_events_arrive_in_order() -> None:
    log, hub = make_hub()
    stream = hub.open_stream()
    watch_id = stream.create(WatchSpec(b"a"))
    assert watch_id == 0
    r1 = log.apply((b"a", b"1"))
    log.apply((b"b", b"x"))
    r3 = log.apply((b"a", None))
    out = drain(stream)
    assert out[0] == Delivery(0, 1, created=True)
    assert events_of(out, 0) == [(PUT, b"a", r1), (DELETE, b"a", r3)]
    assert out[-1].revision == r3


@run
async def test_catch_up_then_live_without_gap_or_duplicate_at_the_boundary() -> None:
    """History read sees a revision the live stream has not published yet: it must appear exactly once."""
    log, hub = make_hub()
    for i in range(5):
        log.apply((b"k", str(i).encode()))
    log.apply((b"k", b"applied-not-published"), publish=False)
    stream = hub.open_stream()
    stream.create(WatchSpec(b"k", start_revision=3))
    log.publish()
    log.apply((b"k", b"live"))
    out = drain(stream)
    assert [rev for _, _, rev in events_of(out, 0)] == [3, 4, 5, 6, 7, 8]


def test_revisions_installed_by_a_snapshot_reach_watchers_from_history() -> None:
    log, hub = make_hub()
    stream = hub.open_stream()
    stream.create(WatchSpec(b"k"))
    log.apply((b"k", b"1"))
    log.apply((b"k", b"2"), publish=False)
    log.apply((b"k", b"3"), publish=False)
    log.install_snapshot()
    log.apply((b"k", b"4"))
    assert [rev for _, _, rev in events_of(drain(stream), 0)] == [2, 3, 4, 5]


def test_watcher_whose_history_was_compacted_during_a_snapshot_is_canceled() -> None:
    log, hub = make_hub()
    stream = hub.open_stream()
    stream.create(WatchSpec(b"k"))
    log.apply((b"k", b"1"), publish=False)
    log.apply((b"k", b"2"), publish=False)
    log.install_snapshot()
    log.compacted = 3
    log.apply((b"k", b"3"))
    out = drain(stream)
    assert out[-1].canceled and out[-1].compact_revision == 3
    assert not events_of(out, 0)


@run
async def test_future_start_revision_skips_earlier_revisions() -> None:
    log, hub = make_hub()
    stream = hub.open_stream()
    stream.create(WatchSpec(b"k", start_revision=4))
    for i in range(5):
        log.apply((b"k", str(i).encode()))
    assert [rev for _, _, rev in events_of(drain(stream), 0)] == [4, 5, 6]


@run
async def test_compacted_start_revision_is_created_then_canceled_with_compact_revision() -> None:
    log, hub = make_hub()
    for i in range(5):
        log.apply((b"k", str(i).encode()))
    log.compacted = 4
    stream = hub.open_stream()
    stream.create(WatchSpec(b"k", start_revision=2))
    out = drain(stream)
    assert [(d.created, d.canceled, d.compact_revision) for d in out] == [(True, False, 0), (False, True, 4)]
    assert hub.watcher_count() == 0


@run
async def test_filters_ranges_and_prev_kv() -> None:
    log, hub = make_hub()
    stream = hub.open_stream()
    no_put = stream.create(WatchSpec(b"a", b"c", no_put=True, prev_kv=True))
    no_delete = stream.create(WatchSpec(b"b", b"\0", no_delete=True))
    log.apply((b"a", b"1"), (b"b", b"2"), (b"d", b"3"))
    log.apply((b"a", None), (b"d", None))
    out = drain(stream)
    deletes = [e for d in out if d.watch_id == no_put for e in d.events]
    assert [(e.type, e.kv.key, e.prev_kv.value) for e in deletes] == [(DELETE, b"a", b"1")]
    puts = [e for d in out if d.watch_id == no_delete for e in d.events]
    assert [(e.kv.key, e.HasField("prev_kv")) for e in puts] == [(b"b", False), (b"d", False)]


@run
async def test_a_revision_is_never_split_across_replies() -> None:
    log, hub = make_hub(max_batch_bytes=1)
    stream = hub.open_stream()
    stream.create(WatchSpec(b"k", b"l"))
    log.apply(*((b"k%d" % i, b"v" * 100) for i in range(10)))
    log.apply((b"k1", b"w"))
    out = [d for d in drain(stream) if d.events]
    assert [len(d.events) for d in out] == [10, 1]
    assert [{e.kv.mod_revision for e in d.events} for d in out] == [{2}, {3}]


@run
async def test_slow_watcher_is_canceled_with_a_resume_revision_and_others_continue() -> None:
    log, hub = make_hub(max_pending_events=3)
    slow_stream, fast_stream = hub.open_stream(), hub.open_stream()
    slow = slow_stream.create(WatchSpec(b"k"))
    fast_stream.create(WatchSpec(b"k"))
    drain(slow_stream)
    first = log.apply((b"k", b"0"))
    for i in range(1, 6):
        log.apply((b"k", str(i).encode()))
        drain(fast_stream)  # the fast reader keeps up; the slow one never reads
    out = drain(slow_stream)
    assert out[-1].watch_id == slow and out[-1].canceled
    assert f"watch again from revision {first}" in out[-1].cancel_reason
    assert hub.watcher_count() == 1


@run
async def test_progress_reply_follows_all_earlier_events_and_never_goes_back() -> None:
    log, hub = make_hub(max_batch_bytes=1)
    stream = hub.open_stream()
    stream.create(WatchSpec(b"k"))
    for i in range(3):
        log.apply((b"k", str(i).encode()))
    stream.request_progress()
    out = drain(stream)
    progress = [i for i, d in enumerate(out) if d.watch_id == PROGRESS_WATCH_ID]
    assert len(progress) == 1
    last_event = max(i for i, d in enumerate(out) if d.events)
    assert progress[0] > last_event and out[progress[0]].revision == log.current_revision()
    # A new watcher far in the past must not drag a later progress reply below the earlier one.
    stream.create(WatchSpec(b"k", start_revision=2))
    stream.request_progress()
    replies = drain(stream)
    answers = [d.revision for d in replies if d.watch_id == PROGRESS_WATCH_ID]
    assert answers == [log.current_revision()]
    assert hub.progress(stream) == log.current_revision()


@run
async def test_periodic_progress_notify_only_for_idle_watchers_that_asked() -> None:
    log, hub = make_hub()
    stream = hub.open_stream()
    asked = stream.create(WatchSpec(b"k", progress_notify=True))
    stream.create(WatchSpec(b"k"))
    log.apply((b"other", b"x"))
    drain(stream)
    stream.notify_progress()
    out = drain(stream)
    assert out == [Delivery(asked, log.current_revision())]


@run
async def test_busy_watcher_does_not_starve_its_stream_neighbours() -> None:
    log, hub = make_hub(max_batch_bytes=1)
    stream = hub.open_stream()
    busy = stream.create(WatchSpec(b"busy"))
    quiet = stream.create(WatchSpec(b"quiet"))
    drain(stream)
    for i in range(20):
        log.apply((b"busy", str(i).encode()))
    log.apply((b"quiet", b"q"))
    first_round = await stream.next()
    assert {d.watch_id for d in first_round} == {busy, quiet}


@run
async def test_ids_duplicates_empty_ranges_and_cancel() -> None:
    log, hub = make_hub()
    stream = hub.open_stream()
    assert stream.create(WatchSpec(b"a"), watch_id=7) == 7
    assert stream.create(WatchSpec(b"a")) == 0
    assert stream.create(WatchSpec(b"a")) == 1
    assert stream.create(WatchSpec(b"a"), watch_id=7) == -1
    assert stream.create(WatchSpec(b"b", b"a")) == -1
    assert stream.cancel(0)
    assert not stream.cancel(42)
    log.apply((b"a", b"1"))
    out = drain(stream)
    refusals = [d.cancel_reason for d in out if d.created and d.canceled]
    assert refusals == [REASON_DUPLICATE_ID, REASON_EMPTY_RANGE]
    assert Delivery(0, 1, canceled=True) in out
    assert {d.watch_id for d in out if d.events} == {1, 7}


@run
async def test_closing_the_hub_ends_waiting_streams() -> None:
    _, hub = make_hub()
    stream = hub.open_stream()
    waiter = asyncio.ensure_future(stream.next())
    await asyncio.sleep(0)
    hub.close()
    with pytest.raises(StreamClosed):
        await waiter
    assert hub.watcher_count() == 0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("put"), st.sampled_from([b"a", b"b", b"c"]), st.booleans()),
            st.tuples(st.just("watch"), st.integers(0, 30), st.booleans()),
            st.tuples(st.just("drain"), st.integers(0, 0), st.booleans()),
        ),
        max_size=50,
    )
)
def test_every_watcher_sees_exactly_its_events_in_order(ops: list[tuple[str, Any, bool]]) -> None:
    """Random interleavings of writes (some applied before being published), creates and reads."""

    async def scenario() -> None:
        log, hub = make_hub(max_batch_bytes=64)
        stream = hub.open_stream()
        starts: dict[int, int] = {}
        got: list[Delivery] = []
        for op, arg, flag in ops:
            if op == "put":
                log.apply((arg, b"v"), publish=flag)
            elif op == "watch":
                start = arg if flag else 0
                watch_id = stream.create(WatchSpec(b"a", b"c", start_revision=start))
                starts[watch_id] = start if start > 0 else hub.published_revision + 1
            else:
                got += drain(stream)
        log.publish()
        got += drain(stream)
        for watch_id, start in starts.items():
            expected = [
                (e.type, e.kv.key, r.revision)
                for r in log.history
                if r.revision >= start
                for e in r.events
                if e.kv.key < b"c"
            ]
            assert events_of(got, watch_id) == expected

    asyncio.run(scenario())
