"""The values the watch hub and the Watch service exchange: what a watcher wants, what a reply carries, and
the memory bounds on unsent events. Protocol-neutral: the service maps them to etcd's messages."""

from __future__ import annotations

from dataclasses import dataclass

from raftkv.proto import kv_pb2

#: Added to keys and values when estimating what a queued event occupies in memory.
EVENT_OVERHEAD_BYTES = 128

_PUT = kv_pb2.Event.EventType.PUT
_DELETE = kv_pb2.Event.EventType.DELETE


@dataclass(frozen=True, slots=True)
class WatchLimits:
    """How much unsent watch data a member holds, and for how long. Byte figures are estimates of what
    queued events occupy (keys and values plus ``EVENT_OVERHEAD_BYTES`` each)."""

    #: Queued live events one watcher may hold before it stops being fed live and replays from history.
    watcher_bytes: int = 4 << 20
    #: The same for all watchers of one stream together.
    stream_bytes: int = 16 << 20
    #: The same for all watchers of the member together, counting replies handed to gRPC and not yet sent;
    #: at this bound replay steps also wait.
    member_bytes: int = 256 << 20
    #: Target size of one round of a stream's replies; a single revision larger than this is still sent whole.
    batch_bytes: int = 128 << 10
    #: History one replay step reads, matching or not: bounds how long one step holds the event loop.
    replay_bytes: int = 128 << 10
    #: After a replay step of d seconds, the next one (of any stream) waits ``replay_rest * d``: replaying
    #: history (and sending it) then takes a bounded share of the event loop the Raft loop runs on.
    replay_rest: float = 8.0
    #: A watcher that is behind while its stream has taken nothing for this long is canceled.
    stall_seconds: float = 300.0


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


def event_bytes(event: kv_pb2.Event) -> int:
    """Estimated memory of a queued event (protobuf sizes would cost an encoding per watcher)."""
    size = EVENT_OVERHEAD_BYTES + len(event.kv.key) + len(event.kv.value)
    if event.HasField("prev_kv"):
        size += len(event.prev_kv.key) + len(event.prev_kv.value)
    return size


def without_prev_kv(event: kv_pb2.Event) -> kv_pb2.Event:
    if not event.HasField("prev_kv"):
        return event
    return kv_pb2.Event(type=event.type, kv=event.kv)
