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
from raftkv.proto import kv_pb2
from raftkv.server.backend import RevisionEvents
from raftkv.server.watch_hub import (
    MAX_CONTROL_BACKLOG,
    PROGRESS_WATCH_ID,
    REASON_DUPLICATE_ID,
    REASON_EMPTY_RANGE,
    Delivery,
    StreamClosed,
    WatchHub,
    WatchLimits,
    WatchSpec,
    WatchStream,
)
from raftkv.statemachine.mvcc import HistoryPage

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
        self.history_reads = 0
        self._subscribers: list[Callable[[RevisionEvents], None]] = []
        self._unpublished: list[RevisionEvents] = []

    # Backend surface used by the hub.
    def current_revision(self) -> int:
        return self.history[-1].revision if self.history else 1

    def compact_revision(self) -> int:
        return self.compacted

    def history_page(self, start: int, key: bytes, range_end: bytes, *, prev_kv: bool,
                     max_bytes: int) -> HistoryPage:
        if start < self.compacted:
            raise errors.COMPACTED.exception()
        self.history_reads += 1
        spec = WatchSpec(key, range_end)
        out: list[tuple[int, list[kv_pb2.Event]]] = []
        scanned = 0
        for revision in self.history:
            if revision.revision < start:
                continue
            if scanned >= max_bytes:
                return HistoryPage(out, revision.revision, scanned)
            scanned += sum(e.ByteSize() for e in revision.events)
            events = [e if prev_kv else kv_pb2.Event(type=e.type, kv=e.kv)
                      for e in revision.events if spec.matches(e.kv.key)]
            if events:
                out.append((revision.revision, events))
        return HistoryPage(out, self.current_revision() + 1, scanned)

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


def make_hub(clock: Callable[[], float] | None = None, **limits: Any) -> tuple[AppliedLog, WatchHub]:
    log = AppliedLog()
    hub = WatchHub(log, WatchLimits(**limits), **({"clock": clock} if clock else {}))  # type: ignore[arg-type]
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
    log, hub = make_hub(batch_bytes=1)
    stream = hub.open_stream()
    stream.create(WatchSpec(b"k", b"l"))
    log.apply(*((b"k%d" % i, b"v" * 100) for i in range(10)))
    log.apply((b"k1", b"w"))
    out = [d for d in drain(stream) if d.events]
    assert [len(d.events) for d in out] == [10, 1]
    assert [{e.kv.mod_revision for e in d.events} for d in out] == [{2}, {3}]


@run
async def test_progress_reply_follows_all_earlier_events_and_never_goes_back() -> None:
    log, hub = make_hub(batch_bytes=1)
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
    log, hub = make_hub(batch_bytes=1)
    stream = hub.open_stream()
    busy = stream.create(WatchSpec(b"busy"))
    quiet = stream.create(WatchSpec(b"quiet"))
    drain(stream)
    for i in range(20):
        log.apply((b"busy", str(i).encode()))
    log.apply((b"quiet", b"q"))
    first_rounds = await stream.next() + await stream.next()
    assert {d.watch_id for d in first_rounds} == {busy, quiet}


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
async def test_a_client_that_sends_creates_without_reading_answers_is_held_up() -> None:
    _, hub = make_hub()
    stream = hub.open_stream()
    for _ in range(MAX_CONTROL_BACKLOG):
        await stream.accepting()
        stream.create(WatchSpec(b"k"))
    blocked = asyncio.ensure_future(stream.accepting())
    await asyncio.sleep(0.01)
    assert not blocked.done()
    assert len(stream.poll()) == MAX_CONTROL_BACKLOG
    await asyncio.wait_for(blocked, 5)


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


@run
async def test_a_watcher_that_does_not_read_stops_being_fed_and_later_gets_everything_once() -> None:
    """Past its bound a live watcher's queue is dropped (history still has it): memory stays bounded, and
    when the client reads again it replays from where it was, without gap or duplicate."""
    log, hub = make_hub(watcher_bytes=1000)
    slow_stream, fast_stream = hub.open_stream(), hub.open_stream()
    slow = slow_stream.create(WatchSpec(b"k"))
    fast = fast_stream.create(WatchSpec(b"k"))
    drain(slow_stream)
    fast_got = drain(fast_stream)
    revisions = []
    for _i in range(30):
        revisions.append(log.apply((b"k", b"v" * 100)))
        fast_got += drain(fast_stream)  # the fast reader keeps up; the slow one never reads
        assert hub.memory_bytes() <= 1000 + 300
    assert hub.replaying_count() == 1 and hub.fell_behind_total == 1
    assert [rev for _, _, rev in events_of(fast_got, fast)] == revisions
    assert [rev for _, _, rev in events_of(drain(slow_stream), slow)] == revisions
    assert hub.replaying_count() == 0 and hub.memory_bytes() == 0
    log.apply((b"k", b"live again"))
    assert len(events_of(drain(slow_stream), slow)) == 1


@run
async def test_stream_and_member_bounds_shed_the_largest_queues_first() -> None:
    log, hub = make_hub(stream_bytes=2000, member_bytes=3000)
    one = hub.open_stream()
    big, small = one.create(WatchSpec(b"big")), one.create(WatchSpec(b"small"))
    others = [hub.open_stream() for _ in range(3)]
    for stream in others:
        stream.create(WatchSpec(b"small"))
    for stream in (one, *others):
        drain(stream)
    log.apply((b"small", b"s"))
    for _ in range(20):
        log.apply((b"big", b"b" * 200))
        assert one.queued_bytes <= 2000 + 400 and hub.memory_bytes() <= 3000 + 400
    assert hub.fell_behind_total >= 1 and hub.replaying_count() == 1  # only `big` fell behind
    got = drain(one)
    assert len(events_of(got, big)) == 20 and len(events_of(got, small)) == 1


@run
async def test_replay_is_paced_by_the_reader_and_bounded_per_step() -> None:
    """200 watchers from revision 1 that never read cost no history read at all; one that reads gets one
    bounded step per round."""
    log, hub = make_hub(replay_bytes=1000, batch_bytes=1 << 20)
    for i in range(200):
        log.apply((b"k%d" % (i % 10), b"v" * 100))
    streams = [hub.open_stream() for _ in range(200)]
    for stream in streams:
        stream.create(WatchSpec(b"k", b"l", start_revision=1))
        assert [d.created for d in stream.poll()] == [True]  # the created reply; then the client stops reading
    assert log.history_reads == 0 and hub.memory_bytes() == 0
    reader = streams[0]
    first = reader.poll()
    assert log.history_reads == 1
    assert 0 < sum(len(d.events) for d in first) <= 1000 // 100 + 1
    rest = drain(reader)
    assert sum(len(d.events) for d in first + rest) == 200 and log.history_reads > 10


@run
async def test_a_stalled_stream_has_its_watchers_that_are_behind_canceled_with_a_resume_revision() -> None:
    now = [0.0]
    log, hub = make_hub(clock=lambda: now[0], stall_seconds=60)
    stalled, reading, idle = hub.open_stream(), hub.open_stream(), hub.open_stream()
    behind = stalled.create(WatchSpec(b"k"))
    reading.create(WatchSpec(b"k"))
    idle.create(WatchSpec(b"quiet"))
    for stream in (stalled, reading, idle):
        drain(stream)
    first = log.apply((b"k", b"1"))
    assert events_of(stalled.poll(), behind)  # handed to gRPC, which the client never drains
    for _ in range(5):
        now[0] += 30
        log.apply((b"k", b"more"))
        drain(reading)
    out = drain(stalled)
    assert out[-1].watch_id == behind and out[-1].canceled and not out[-1].compact_revision
    assert f"watch again from revision {first + 1}" in out[-1].cancel_reason
    assert hub.watcher_count() == 2  # the reader, and the idle watcher nothing waited for


@run
async def test_a_replaying_watcher_whose_history_is_compacted_is_canceled_as_etcd_does() -> None:
    log, hub = make_hub(watcher_bytes=150)
    stream = hub.open_stream()
    stream.create(WatchSpec(b"k"))
    drain(stream)
    for _i in range(5):
        log.apply((b"k", b"v" * 100))
    assert hub.replaying_count() == 1
    log.compacted = 4
    out = drain(stream)
    assert out[-1].canceled and out[-1].compact_revision == 4
    # etcd 3.4 leaves cancel_reason empty on a compacted watch: clients read compact_revision.
    assert out[-1].cancel_reason == "" and hub.watcher_count() == 0


@settings(max_examples=120, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("put"), st.sampled_from([b"a", b"b", b"c"]), st.booleans()),
            st.tuples(st.just("watch"), st.integers(0, 30), st.booleans()),
            st.tuples(st.just("drain"), st.integers(0, 0), st.booleans()),
            st.tuples(st.just("poll"), st.integers(0, 0), st.booleans()),
        ),
        max_size=50,
    ),
    st.sampled_from([150, 400, 1 << 30]),
    st.sampled_from([300, 1 << 30]),
    st.sampled_from([1, 100, 1 << 30]),
)
def test_every_watcher_sees_exactly_its_events_in_order(
    ops: list[tuple[str, Any, bool]], watcher_bytes: int, stream_bytes: int, replay_bytes: int
) -> None:
    """Random interleavings of writes (some applied before being published), creates and reads, under
    limits tight enough that watchers fall behind and replay from history in small steps."""

    async def scenario() -> None:
        log, hub = make_hub(batch_bytes=64, watcher_bytes=watcher_bytes, stream_bytes=stream_bytes,
                            replay_bytes=replay_bytes)
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
            elif op == "poll":
                got += stream.poll()
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
