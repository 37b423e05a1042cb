"""Watch bookkeeping shared by both clients: what to ask for, what to deliver, where to resume.

A watch outlives the stream that carries it. After a member fails, the watch is re-created on another
member from ``next_revision`` — one past the last revision handed to the caller (or confirmed by a progress
notification) — so the caller sees every event exactly once: no gap, because the server replays from
``next_revision``; no duplicate, because anything older than it is dropped. A compacted resume point
cannot be honoured and surfaces as ``CompactedError``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import grpc

from raftkv.client import ops
from raftkv.client.errors import CompactedError, Unavailable, WatchCanceled, from_rpc_error
from raftkv.client.routing import REQUIRE_LEADER, Backoff, Failure, Router, classify, never_connected
from raftkv.client.types import Key
from raftkv.proto import rpc_pb2

#: Watches require a leader (etcd's WithRequireLeader): a member cut off from the leader ends the stream
#: with "no leader" instead of silently delivering nothing, and the client moves to another member.
WATCH_METADATA = REQUIRE_LEADER

_FILTERS = {"noput": rpc_pb2.WatchCreateRequest.NOPUT, "nodelete": rpc_pb2.WatchCreateRequest.NODELETE}


class WatchState:
    """Transport-free state of one resumable watch."""

    def __init__(self, router: Router, key: Key, range_end: Key | None = None, *, prefix: bool = False,
                 start_revision: int = 0, prev_kv: bool = False, progress_notify: bool = False,
                 filters: Iterable[str] = (), reconnect_timeout: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.router = router
        self._key, self._range_end = ops.key_range(key, range_end, prefix=prefix)
        #: 0 until the first stream is created ("from now"); then the first revision not yet delivered.
        self.next_revision = start_revision
        self._prev_kv, self._progress_notify = prev_kv, progress_notify
        self._filters = [_FILTERS[f.lower()] for f in filters]
        self._reconnect_timeout, self._clock = reconnect_timeout, clock
        self._failing_since: float | None = None
        self._backoff = Backoff()
        self.endpoint = router.current()
        #: Set by the server's first ``created`` answer: from then on no write can slip past the watch.
        self.established = False

    def create_request(self) -> rpc_pb2.WatchRequest:
        return rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=self._key, range_end=self._range_end, start_revision=self.next_revision,
            prev_kv=self._prev_kv, progress_notify=self._progress_notify, filters=self._filters,
        ))

    def receive(self, resp: rpc_pb2.WatchResponse) -> rpc_pb2.WatchResponse | None:
        """``resp`` cut down to the events the caller has not seen yet, or None if it has none for the caller
        (raises if the server ended the watch). Whole responses, not just events, are handed on because
        tools print them as etcd's client delivers them (``kvctl watch -w json``)."""
        if resp.compact_revision:
            raise CompactedError(
                f"etcdserver: mvcc: required revision has been compacted (oldest available: "
                f"{resp.compact_revision})", compact_revision=resp.compact_revision)
        if resp.canceled:
            raise WatchCanceled(resp.cancel_reason or "watch canceled by the server")
        if resp.created:
            self._failing_since, self._backoff = None, Backoff()
            self.established = True
            if self.next_revision == 0:
                self.next_revision = resp.header.revision + 1
            return None
        fresh = [e for e in resp.events if e.kv.mod_revision >= self.next_revision]
        if fresh:
            self.next_revision = fresh[-1].kv.mod_revision + 1
            if len(fresh) < len(resp.events):
                resp = rpc_pb2.WatchResponse(header=resp.header, watch_id=resp.watch_id, events=fresh)
            return resp
        if not resp.events and resp.header.revision:
            # A progress notification: nothing up to header.revision is pending for this watch.
            self.next_revision = max(self.next_revision, resp.header.revision + 1)
        return None

    def stream_failed(self, error: grpc.RpcError | None) -> float:
        """The stream broke (``None``: the server closed it). Returns how long to wait before re-creating
        the watch on the next endpoint; raises if the error is final or members stayed unreachable for
        ``reconnect_timeout``."""
        if error is not None and classify(error) is Failure.FATAL:
            raise from_rpc_error(error)
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since > self._reconnect_timeout:
            detail = error.details() if error is not None else "stream closed"
            raise Unavailable(f"watch could not be resumed for {self._reconnect_timeout:g}s: {detail}")
        refused = error is not None and never_connected(error)
        self.router.failed(self.endpoint, refused=refused)
        self.endpoint = self.router.current()
        # A member that refused us is gone: the next one is another member, and can be asked at once.
        return 0.0 if refused and not self.router.refused(self.endpoint) else self._backoff.next()
