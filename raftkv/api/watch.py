"""``etcdserverpb.Watch/Watch``: etcd's bidirectional watch stream over the node's :class:`WatchHub`.

This module only translates the wire protocol; ordering, catch-up, buffering and progress are the hub's.
One call is one :class:`WatchStream`: a reader task turns requests (create, cancel, progress) into stream
operations, a ticker task emits the periodic progress notifications and watches for a lost leader, and the
handler itself sends the stream's replies in the order the hub hands them out. Every reply has a header.
Fragmentation is never used (a reply always holds whole revisions), so the ``fragment`` flag is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from raftkv import errors
from raftkv.api import identity, validation
from raftkv.api.metadata import REQUIRE_LEADER_KEY, Context
from raftkv.api.receive_limit import UnreadableMessage
from raftkv.proto import kv_pb2, rpc_pb2, rpc_pb2_grpc
from raftkv.server.backend import Backend
from raftkv.server.watch_hub import StreamClosed, WatchHub, WatchStream
from raftkv.server.watch_types import Delivery, WatchSpec

#: etcd's default ``--experimental-watch-progress-notify-interval``.
DEFAULT_PROGRESS_INTERVAL = 600.0

#: How often a stream re-checks leadership when its client required a leader (``hasleader`` metadata).
LEADER_CHECK_INTERVAL = 0.5

#: etcd ends require-leader watch streams once the member has known no leader for about 3 election timeouts.
DEFAULT_LEADER_LOSS_TIMEOUT = 3.0

#: ``--unsafe-planted-bug drop-watch-event`` (fault-finding self-tests only): one event in this many is lost.
PLANTED_DROP_EVERY = 10

#: etcd cancels a watch its user may not read with the text of the gRPC error (``ErrGRPCPermissionDenied``).
REASON_PERMISSION_DENIED = f"rpc error: code = PermissionDenied desc = {errors.PERMISSION_DENIED.message}"

_NOPUT = rpc_pb2.WatchCreateRequest.FilterType.NOPUT
_NODELETE = rpc_pb2.WatchCreateRequest.FilterType.NODELETE


def spec_from_request(request: rpc_pb2.WatchCreateRequest) -> WatchSpec:
    """etcd's server-side normalisation: an empty key is ``\\0`` (the smallest key)."""
    return WatchSpec(
        key=request.key or b"\0",
        range_end=request.range_end,
        start_revision=max(request.start_revision, 0),
        prev_kv=request.prev_kv,
        no_put=_NOPUT in request.filters,
        no_delete=_NODELETE in request.filters,
        progress_notify=request.progress_notify,
    )


class WatchServicer(rpc_pb2_grpc.WatchServicer):
    """The Watch service. ``progress_interval`` is the period of ``progress_notify`` replies."""

    def __init__(
        self,
        backend: Backend,
        hub: WatchHub,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
        leader_loss_timeout: float = DEFAULT_LEADER_LOSS_TIMEOUT,
        planted_bug: str | None = None,
    ) -> None:
        self._backend = backend
        self._hub = hub
        self._progress_interval = progress_interval
        self._leader_loss_timeout = leader_loss_timeout
        self._drop_events = planted_bug == "drop-watch-event"
        self._events_seen = 0

    async def Watch(
        self, request_iterator: AsyncIterator[rpc_pb2.WatchRequest], context: Context
    ) -> AsyncIterator[rpc_pb2.WatchResponse]:
        stream = self._hub.open_stream()
        lost_leader = asyncio.Event()
        reader = asyncio.create_task(self._read(request_iterator, stream, context), name="watch-reader")
        tasks = [
            reader,
            asyncio.create_task(self._progress_ticker(stream), name="watch-progress"),
        ]
        if _requires_leader(context):
            tasks.append(asyncio.create_task(self._leader_monitor(stream, lost_leader), name="watch-leader"))
        try:
            while True:
                try:
                    deliveries = await stream.next()
                except StreamClosed:
                    break
                for delivery in deliveries:
                    yield self._response(delivery)
        finally:
            for task in tasks:
                task.cancel()
            stream.close()
        if lost_leader.is_set():
            raise errors.NO_LEADER.exception()
        if reader.done() and not reader.cancelled() and (malformed := reader.result()) is not None:
            raise malformed

    async def _read(
        self, requests: AsyncIterator[rpc_pb2.WatchRequest], stream: WatchStream, context: Context
    ) -> UnreadableMessage | None:
        """Apply the client's requests in order. The client half-closing its side ends nothing (as etcd);
        a message that does not decode, or is too large, ends the stream, and the call fails with its error."""
        try:
            await self._apply_requests(requests, stream, context)
        except UnreadableMessage as exc:
            stream.close()
            return exc
        return None

    async def _apply_requests(
        self, requests: AsyncIterator[rpc_pb2.WatchRequest], stream: WatchStream, context: Context
    ) -> None:
        """One request at a time, and none while the client leaves the stream's answers unread."""
        with contextlib.suppress(StreamClosed):
            while True:
                await stream.accepting()
                try:
                    request = await anext(requests)
                except StopAsyncIteration:
                    return
                kind = request.WhichOneof("request_union")
                if kind == "create_request":
                    create = request.create_request
                    try:
                        validation.check_watch_create(create)
                    except errors.EtcdException as exc:
                        stream.refuse(exc.error.message)
                        continue
                    spec = spec_from_request(create)
                    if await self._permitted(context, spec):
                        stream.create(spec, watch_id=create.watch_id)
                    else:
                        stream.refuse(REASON_PERMISSION_DENIED, create.watch_id)
                elif kind == "cancel_request":
                    stream.cancel(request.cancel_request.watch_id)
                elif kind == "progress_request":
                    stream.request_progress()

    async def _permitted(self, context: Context, spec: WatchSpec) -> bool:
        """etcd's ``isWatchPermitted``: READ on the watched range (checked whole, also for a from-key watch,
        where etcd 3.4 checks only the first key)."""
        try:
            await identity.check_read(context, self._backend, spec.key, spec.range_end)
        except errors.EtcdException:
            return False
        return True

    async def _progress_ticker(self, stream: WatchStream) -> None:
        with contextlib.suppress(StreamClosed):
            while True:
                await asyncio.sleep(self._progress_interval)
                stream.notify_progress()

    async def _leader_monitor(self, stream: WatchStream, lost_leader: asyncio.Event) -> None:
        """End the stream once no leader has been known for ``leader_loss_timeout`` (etcd's monitorLeader)."""
        leaderless_since: float | None = None
        while True:
            await asyncio.sleep(LEADER_CHECK_INTERVAL)
            if self._backend.has_leader():
                leaderless_since = None
                continue
            now = time.monotonic()
            leaderless_since = leaderless_since or now
            if now - leaderless_since >= self._leader_loss_timeout:
                lost_leader.set()
                stream.close()
                return

    def _response(self, delivery: Delivery) -> rpc_pb2.WatchResponse:
        header = self._backend.header()
        header.revision = delivery.revision
        response = rpc_pb2.WatchResponse(
            header=header,
            watch_id=delivery.watch_id,
            created=delivery.created,
            canceled=delivery.canceled,
            compact_revision=delivery.compact_revision,
            cancel_reason=delivery.cancel_reason,
        )
        response.events.extend(self._planted_drop(delivery.events) if self._drop_events else delivery.events)
        return response

    def _planted_drop(self, events: tuple[kv_pb2.Event, ...]) -> list[kv_pb2.Event]:
        """The planted bug the fault-finding checkers must catch: silently lose every N-th event."""
        kept = []
        for event in events:
            self._events_seen += 1
            if self._events_seen % PLANTED_DROP_EVERY:
                kept.append(event)
        return kept


def _requires_leader(context: Context) -> bool:
    return any(key == REQUIRE_LEADER_KEY and value == "true" for key, value in context.invocation_metadata() or ())
