"""The blocking client: ``Client`` drives the shared policy (``routing``) with ordinary gRPC calls."""

from __future__ import annotations

import collections
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf.message import Message

from raftkv.client import routing as r
from raftkv.client.config import ClientConfig
from raftkv.client.errors import ClientError, LeaseNotFound, dial_failure
from raftkv.client.snapshot import Progress, SnapshotFile, snapshot_stream
from raftkv.client.surface import BoundTxn, Lease, Surface
from raftkv.client.types import Event, Key
from raftkv.client.watch import WATCH_METADATA, WatchState
from raftkv.proto import rpc_pb2

if TYPE_CHECKING:
    from raftkv.client.surface import M
    from raftkv.client.types import (
        Alarm,
        DeleteResult,
        KeyValue,
        LeaseInfo,
        Member,
        PutResult,
        RangeResult,
        Status,
        TxnResult,
    )

T = TypeVar("T")


def keepalive_interval(ttl: int) -> float:
    """Refresh every TTL/3 (as etcd's client does): two refreshes may fail before the lease expires."""
    return max(0.2, ttl / 3)


def resolve_config(config: ClientConfig | None, endpoints: Sequence[str] | str | None,
                   **overrides: Any) -> ClientConfig:
    """Explicit config, else the environment (KVCTL_*) with explicit arguments taking precedence."""
    if config is not None:
        return config
    if isinstance(endpoints, str):
        endpoints = endpoints.split(",")
    return ClientConfig.from_env(endpoints=endpoints, **overrides)


class Client(Surface):
    """Blocking raftkv/etcd client. Thread-safe; one gRPC channel per endpoint.

    ``Client()`` reads KVCTL_ENDPOINTS/KVCTL_CACERT/KVCTL_CERT/KVCTL_KEY/KVCTL_INSECURE. ``timeout`` is the
    default deadline of each call, retries included. Set ``server_dedupes=False`` against servers that do
    not deduplicate retried writes (etcd): ambiguous write failures are then raised, never retried.
    ``attempt_timeout`` bounds one attempt: how long a silent member (paused, cut off) is waited for
    before another is tried.
    """

    if TYPE_CHECKING:
        # ``Surface``'s methods with this client's own return types (see raftkv/client/surface.py).
        def call(
            self, method: r.Method[M], message: Message, *, write: bool, route: r.Route = r.Route.LEADER,
            endpoint: str | None = None, timeout: float | None = None
        ) -> M: ...
        def get(
            self, key: Key, *, revision: int = 0, serializable: bool = False, timeout: float | None = None
        ) -> KeyValue | None: ...
        def get_range(
            self, key: Key, range_end: Key | None = None, *, prefix: bool = False, from_key: bool = False,
            revision: int = 0, serializable: bool = False, keys_only: bool = False, count_only: bool = False,
            limit: int = 0, sort_order: str = 'none', sort_target: str = 'key', timeout: float | None = None
        ) -> RangeResult: ...
        def get_prefix(self, prefix: Key, **options: Any) -> RangeResult: ...
        def put(
            self, key: Key, value: Key, *, lease: int = 0, prev_kv: bool = False, timeout: float | None = None
        ) -> PutResult: ...
        def delete(
            self, key: Key, range_end: Key | None = None, *, prefix: bool = False, from_key: bool = False,
            prev_kv: bool = False, timeout: float | None = None
        ) -> DeleteResult: ...
        def compare_and_swap(self, key: Key, expected: Key, new: Key, *, timeout: float | None = None) -> bool: ...
        def put_if_absent(self, key: Key, value: Key, *, lease: int = 0, timeout: float | None = None) -> bool: ...
        def compact(self, revision: int, *, physical: bool = False, timeout: float | None = None) -> None: ...
        def lease_grant(self, ttl: int, lease_id: int = 0, *, timeout: float | None = None) -> SyncLease: ...
        def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> None: ...
        def lease_time_to_live(
            self, lease_id: int, *, keys: bool = False, timeout: float | None = None
        ) -> LeaseInfo: ...
        def leases(self, *, timeout: float | None = None) -> list[int]: ...
        def lease_keep_alive_once(self, lease_id: int, *, timeout: float | None = None) -> int: ...
        def member_list(self, *, timeout: float | None = None) -> list[Member]: ...
        def member_add(
            self, peer_urls: list[str], *, learner: bool = False, timeout: float | None = None
        ) -> Member: ...
        def member_remove(self, member_id: int, *, timeout: float | None = None) -> list[Member]: ...
        def member_promote(self, member_id: int, *, timeout: float | None = None) -> list[Member]: ...
        def status(self, endpoint: str | None = None, *, timeout: float | None = None) -> Status: ...
        def alarms(self, *, timeout: float | None = None) -> list[Alarm]: ...
        def alarm_disarm(
            self, member_id: int = 0, alarm: str = 'NONE', *, timeout: float | None = None
        ) -> list[Alarm]: ...
        def defragment(self, endpoint: str | None = None, *, timeout: float | None = None) -> None: ...
        def hash_kv(
            self, endpoint: str | None = None, revision: int = 0, *, timeout: float | None = None
        ) -> tuple[int, int, int]: ...
        def move_leader(self, target_member_id: int, *, timeout: float | None = None) -> None: ...
        def txn(self) -> SyncTxn: ...


    def __init__(self, endpoints: Sequence[str] | str | None = None, *, cacert: str | None = None,
                 cert: str | None = None, key: str | None = None, insecure: bool | None = None,
                 user: str | None = None, password: str | None = None,
                 timeout: float = 5.0, server_dedupes: bool = True, attempt_timeout: float = r.ATTEMPT_TIMEOUT,
                 config: ClientConfig | None = None) -> None:
        self.config = resolve_config(config, endpoints, cacert=cacert, cert=cert, key=key, insecure=insecure,
                                     user=user, password=password)
        super().__init__(r.Router(list(self.config.endpoints)), timeout=timeout, server_dedupes=server_dedupes,
                         login=self.config.login(), attempt_timeout=attempt_timeout)
        self._channels: dict[str, grpc.Channel] = {}
        self._connected: set[str] = set()
        self._lock = threading.Lock()

    def channel(self, endpoint: str) -> grpc.Channel:
        with self._lock:
            if endpoint not in self._channels:
                self._channels[endpoint] = self.config.channel(endpoint)
            return self._channels[endpoint]

    def _dial(self, endpoint: str, timeout: float) -> grpc.Channel:
        """The endpoint's channel, connected: before the first call on it, a ``Status`` probe waits at most
        the dial timeout for the connection (a member that accepts TCP but never completes TLS, an
        unroutable address), like etcd's client. A refused connection fails at once, with gRPC's text."""
        channel = self.channel(endpoint)
        if endpoint not in self._connected:
            wait = min(self.config.dial_timeout, timeout)
            try:
                r.STATUS.on(channel, rpc_pb2.StatusRequest)(rpc_pb2.StatusRequest(), timeout=wait)
            except grpc.RpcError as exc:
                dial_failure(exc, endpoint, wait)
            self._connected.add(endpoint)
        return channel

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
            self._connected.clear()
        for channel in channels:
            channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _call(self, step: r.Attempt) -> Message:
        method = step.method
        channel = self._dial(step.endpoint, step.timeout)
        stub = method.on(channel, type(step.message))
        if not method.streaming:
            return stub(step.message, timeout=step.timeout, metadata=step.metadata)
        responses = stub(iter([step.message]), timeout=step.timeout, metadata=step.metadata)
        try:
            return next(responses)
        except StopIteration:
            raise ClientError(f"{method.path}: the server closed the stream without answering") from None
        finally:
            responses.cancel()

    def _execute(self, request: r.Request, convert: Callable[[Any], T], timeout: float | None) -> T:
        plan = self._executor.run(request, self.timeout if timeout is None else timeout)
        return convert(r.drive_sync(plan, self._call))

    # --------------------------------------------------------------------------- streams

    def watch(self, key: Key, range_end: Key | None = None, **options: Any) -> Watch:
        """Iterate over events of ``key`` (``prefix=True``, ``start_revision``, ``prev_kv``, ``filters``,
        ``progress_notify``, ``reconnect_timeout``). Survives member failures; use as a context manager or
        call ``cancel()``.

        Returns once the server has confirmed the watch, so every write made after this call is seen."""
        watch = Watch(self, WatchState(self._executor.router, key, range_end, **options))
        watch.establish()
        return watch

    def _keep_alive_in_background(self, lease: Lease) -> KeepAlive:
        return KeepAlive(self, lease)

    def snapshot_save(self, path: str | os.PathLike[str], *, endpoint: str | None = None,
                      progress: Progress | None = None, timeout: float = 600.0) -> int:
        """Stream one member's snapshot into ``path`` (checked against its SHA-256, then renamed into place
        from ``path.part``); returns its size. ``progress(bytes_received, bytes_remaining)`` per chunk."""
        stream = snapshot_stream(self.channel(endpoint or self._executor.router.current()))
        with SnapshotFile(path, progress) as out:
            for chunk in stream(rpc_pb2.SnapshotRequest(), timeout=timeout):
                out.write(chunk)
        return out.size


class Watch:
    """Blocking iterator of ``Event``s; see ``Client.watch``."""

    _CLOSE = object()

    def __init__(self, client: Client, state: WatchState) -> None:
        self._client, self._state = client, state
        self._pending: collections.deque[rpc_pb2.WatchResponse] = collections.deque()
        self._events: collections.deque[Event] = collections.deque()
        self._requests: queue.Queue[object] | None = None
        self._responses: Any = None
        self._closed = False

    @property
    def next_revision(self) -> int:
        return self._state.next_revision

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        while not self._events:
            self._events.extend(Event.from_pb(e) for e in self.next_response().events)
        return self._events.popleft()

    def next_response(self) -> rpc_pb2.WatchResponse:
        """The next server response carrying events not delivered yet (older ones removed), as etcd's client
        hands them over; for printing whole responses. Iterate either events or responses, not both.
        Raises ``StopIteration`` once the watch is cancelled."""
        while not self._pending:
            if self._closed:
                raise StopIteration
            self._pending.extend(self._receive())
        return self._pending.popleft()

    def responses(self) -> Iterator[rpc_pb2.WatchResponse]:
        """``next_response`` until the watch is cancelled."""
        while True:
            try:
                yield self.next_response()
            except StopIteration:
                return

    def establish(self) -> None:
        """Block until the server confirms the watch (retrying on other members as needed), or it is
        cancelled."""
        while not self._state.established and not self._closed:
            self._pending.extend(self._receive())

    def _open(self) -> None:
        """Start a stream on the current endpoint with the create request for ``next_revision``."""
        requests: queue.Queue[object] = queue.Queue()
        requests.put(self._state.create_request())

        def request_iterator() -> Iterator[rpc_pb2.WatchRequest]:
            while (item := requests.get()) is not self._CLOSE:
                assert isinstance(item, rpc_pb2.WatchRequest)
                yield item

        endpoint = self._state.endpoint
        unauthenticated = r.drive_sync(self._client._executor.authenticate(endpoint, self._client.timeout),
                                       self._client._call)
        if unauthenticated is not None:
            raise unauthenticated  # never open the stream under the certificate's identity instead
        call = r.WATCH.on(self._client.channel(endpoint), rpc_pb2.WatchRequest)
        metadata = WATCH_METADATA + self._client._executor.auth_metadata()
        self._requests, self._responses = requests, call(request_iterator(), metadata=metadata)

    def _receive(self) -> list[rpc_pb2.WatchResponse]:
        try:
            if self._responses is None:
                self._open()
            # Read once: ``cancel`` from another thread may clear the attribute meanwhile.
            responses = self._responses
            if self._closed or responses is None:
                # A ``cancel`` while the stream opened may have found none to end: end it here (of the two
                # threads, one sees the other's write, so the new stream is never left to block).
                self._drop_stream()
                return []
            fresh = self._state.receive(next(responses))
            return [] if fresh is None else [fresh]
        except (grpc.RpcError, StopIteration) as exc:
            if self._closed:
                return []
            self._drop_stream()
            time.sleep(self._state.stream_failed(exc if isinstance(exc, grpc.RpcError) else None))
            return []
        except ClientError:
            self.cancel()
            raise

    def request_progress(self) -> None:
        """Ask for a progress notification (advances ``next_revision`` on an idle watch)."""
        if self._requests is not None:
            self._requests.put(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

    def _drop_stream(self) -> None:
        if self._requests is not None:
            self._requests.put(self._CLOSE)
        if self._responses is not None:
            self._responses.cancel()
        self._requests = self._responses = None

    def cancel(self) -> None:
        """End the watch; a blocked iteration returns (StopIteration) promptly."""
        self._closed = True
        self._drop_stream()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cancel()


class KeepAlive:
    """Refreshes a lease from a daemon thread while the ``with`` block runs.

    If the lease is found gone, refreshing stops and ``lost`` is set; ``error`` then holds why."""

    def __init__(self, client: Client, lease: Lease) -> None:
        self._client, self._lease = client, lease
        self._stop = threading.Event()
        self.lost = threading.Event()
        self.error: ClientError | None = None
        self._thread = threading.Thread(target=self._run, name=f"keepalive-{lease.id:x}", daemon=True)

    def _run(self) -> None:
        interval = keepalive_interval(self._lease.ttl)
        while not self._stop.wait(interval):
            try:
                ttl = self._client.lease_keep_alive_once(self._lease.id, timeout=interval)
                interval = keepalive_interval(ttl)
            except LeaseNotFound as exc:
                self.error = exc
                self.lost.set()
                return
            except ClientError as exc:  # no member reachable right now: try again sooner
                self.error = exc
                interval = keepalive_interval(self._lease.ttl) / 2

    def __enter__(self) -> KeepAlive:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()


if TYPE_CHECKING:

    class SyncLease(Lease):
        """What ``Client.lease_grant`` returns, as the type checker sees it."""

        def revoke(self) -> None: ...
        def time_to_live(self, keys: bool = False) -> LeaseInfo: ...
        def keep_alive(self) -> KeepAlive: ...

    class SyncTxn(BoundTxn):
        """What ``Client.txn`` returns, as the type checker sees it."""

        def commit(self, timeout: float | None = None) -> TxnResult: ...
