"""The asyncio client: ``AsyncClient`` drives the shared policy (``routing``) with grpc.aio calls.

Create it inside a running event loop (grpc.aio channels bind to the loop that is running)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from raftkv.cancellation import raise_if_cancelling
from raftkv.client import routing as r
from raftkv.client.config import ClientConfig
from raftkv.client.errors import ClientError, LeaseNotFound, dial_failure
from raftkv.client.snapshot import Progress, SnapshotFile, snapshot_stream
from raftkv.client.surface import BoundTxn, Lease, Surface
from raftkv.client.sync import keepalive_interval, resolve_config
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


async def drive_async(plan: r.Plan[T], call: Callable[[r.Attempt], Awaitable[Message]]) -> T:
    """Run a plan with awaited calls and ``asyncio.sleep`` (the twin of ``routing.drive_sync``)."""
    outcome: r.Outcome = None
    while True:
        try:
            step = plan.send(outcome)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        if isinstance(step, r.Sleep):
            await asyncio.sleep(step.seconds)
            outcome = None
            continue
        try:
            outcome = await call(step)
        except grpc.RpcError as error:
            outcome = error


class AsyncClient(Surface):
    """asyncio twin of ``Client``: the same methods, each returning an awaitable."""

    if TYPE_CHECKING:
        # ``Surface``'s methods with this client's own return types (see raftkv/client/surface.py).
        def call(
            self, method: r.Method[M], message: Message, *, write: bool, route: r.Route = r.Route.LEADER,
            endpoint: str | None = None, timeout: float | None = None
        ) -> Awaitable[M]: ...
        def get(
            self, key: Key, *, revision: int = 0, serializable: bool = False, timeout: float | None = None
        ) -> Awaitable[KeyValue | None]: ...
        def get_range(
            self, key: Key, range_end: Key | None = None, *, prefix: bool = False, from_key: bool = False,
            revision: int = 0, serializable: bool = False, keys_only: bool = False, count_only: bool = False,
            limit: int = 0, sort_order: str = 'none', sort_target: str = 'key', timeout: float | None = None
        ) -> Awaitable[RangeResult]: ...
        def get_prefix(self, prefix: Key, **options: Any) -> Awaitable[RangeResult]: ...
        def put(
            self, key: Key, value: Key, *, lease: int = 0, prev_kv: bool = False, timeout: float | None = None
        ) -> Awaitable[PutResult]: ...
        def delete(
            self, key: Key, range_end: Key | None = None, *, prefix: bool = False, from_key: bool = False,
            prev_kv: bool = False, timeout: float | None = None
        ) -> Awaitable[DeleteResult]: ...
        def compare_and_swap(
            self, key: Key, expected: Key, new: Key, *, timeout: float | None = None
        ) -> Awaitable[bool]: ...
        def put_if_absent(
            self, key: Key, value: Key, *, lease: int = 0, timeout: float | None = None
        ) -> Awaitable[bool]: ...
        def compact(
            self, revision: int, *, physical: bool = False, timeout: float | None = None
        ) -> Awaitable[None]: ...
        def lease_grant(
            self, ttl: int, lease_id: int = 0, *, timeout: float | None = None
        ) -> Awaitable[AsyncLease]: ...
        def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> Awaitable[None]: ...
        def lease_time_to_live(
            self, lease_id: int, *, keys: bool = False, timeout: float | None = None
        ) -> Awaitable[LeaseInfo]: ...
        def leases(self, *, timeout: float | None = None) -> Awaitable[list[int]]: ...
        def lease_keep_alive_once(self, lease_id: int, *, timeout: float | None = None) -> Awaitable[int]: ...
        def member_list(self, *, timeout: float | None = None) -> Awaitable[list[Member]]: ...
        def member_add(
            self, peer_urls: list[str], *, learner: bool = False, timeout: float | None = None
        ) -> Awaitable[Member]: ...
        def member_remove(self, member_id: int, *, timeout: float | None = None) -> Awaitable[list[Member]]: ...
        def member_promote(self, member_id: int, *, timeout: float | None = None) -> Awaitable[list[Member]]: ...
        def status(self, endpoint: str | None = None, *, timeout: float | None = None) -> Awaitable[Status]: ...
        def alarms(self, *, timeout: float | None = None) -> Awaitable[list[Alarm]]: ...
        def alarm_disarm(
            self, member_id: int = 0, alarm: str = 'NONE', *, timeout: float | None = None
        ) -> Awaitable[list[Alarm]]: ...
        def defragment(self, endpoint: str | None = None, *, timeout: float | None = None) -> Awaitable[None]: ...
        def hash_kv(
            self, endpoint: str | None = None, revision: int = 0, *, timeout: float | None = None
        ) -> Awaitable[tuple[int, int, int]]: ...
        def move_leader(self, target_member_id: int, *, timeout: float | None = None) -> Awaitable[None]: ...
        def txn(self) -> AsyncTxn: ...


    def __init__(self, endpoints: Sequence[str] | str | None = None, *, cacert: str | None = None,
                 cert: str | None = None, key: str | None = None, insecure: bool | None = None,
                 user: str | None = None, password: str | None = None,
                 timeout: float = 5.0, server_dedupes: bool = True, attempt_timeout: float = r.ATTEMPT_TIMEOUT,
                 config: ClientConfig | None = None) -> None:
        self.config = resolve_config(config, endpoints, cacert=cacert, cert=cert, key=key, insecure=insecure,
                                     user=user, password=password)
        super().__init__(r.Router(list(self.config.endpoints)), timeout=timeout, server_dedupes=server_dedupes,
                         login=self.config.login(), attempt_timeout=attempt_timeout)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._connected: set[str] = set()

    def channel(self, endpoint: str) -> grpc.aio.Channel:
        if endpoint not in self._channels:
            self._channels[endpoint] = self.config.aio_channel(endpoint)
        return self._channels[endpoint]

    async def _dial(self, endpoint: str, timeout: float) -> grpc.aio.Channel:
        """As ``Client._dial``: a ``Status`` probe bounded by the dial timeout before the first call."""
        channel = self.channel(endpoint)
        if endpoint not in self._connected:
            wait = min(self.config.dial_timeout, timeout)
            try:
                await r.STATUS.on(channel, rpc_pb2.StatusRequest)(rpc_pb2.StatusRequest(), timeout=wait)
            except grpc.RpcError as exc:
                dial_failure(exc, endpoint, wait)
            self._connected.add(endpoint)
        return channel

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        self._connected.clear()
        for channel in channels:
            await channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def _call(self, step: r.Attempt) -> Message:
        method = step.method
        channel = await self._dial(step.endpoint, step.timeout)
        stub = method.on(channel, type(step.message))
        if not method.streaming:
            return await stub(step.message, timeout=step.timeout, metadata=step.metadata)
        call = stub(timeout=step.timeout, metadata=step.metadata)
        try:
            await call.write(step.message)
            response = await call.read()
        finally:
            call.cancel()
        if response is grpc.aio.EOF:
            raise ClientError(f"{method.path}: the server closed the stream without answering")
        return response

    def _execute(self, request: r.Request, convert: Callable[[Any], T], timeout: float | None) -> Awaitable[T]:
        async def run() -> T:
            plan = self._executor.run(request, self.timeout if timeout is None else timeout)
            return convert(await drive_async(plan, self._call))

        return run()

    # --------------------------------------------------------------------------- streams

    async def watch(self, key: Key, range_end: Key | None = None, **options: Any) -> AsyncWatch:
        """``async for event in await client.watch(...)``; options and guarantees as for ``Client.watch``."""
        watch = AsyncWatch(self, WatchState(self._executor.router, key, range_end, **options))
        await watch.establish()
        return watch

    def _keep_alive_in_background(self, lease: Lease) -> AsyncKeepAlive:
        return AsyncKeepAlive(self, lease)

    async def snapshot_save(self, path: str | os.PathLike[str], *, endpoint: str | None = None,
                            progress: Progress | None = None, timeout: float = 600.0) -> int:
        """As ``Client.snapshot_save``."""
        stream = snapshot_stream(self.channel(endpoint or self._executor.router.current()))
        with SnapshotFile(path, progress) as out:
            async for chunk in stream(rpc_pb2.SnapshotRequest(), timeout=timeout):
                out.write(chunk)
        return out.size


class AsyncWatch:
    """Async iterator of ``Event``s; see ``AsyncClient.watch``."""

    def __init__(self, client: AsyncClient, state: WatchState) -> None:
        self._client, self._state = client, state
        self._pending: collections.deque[rpc_pb2.WatchResponse] = collections.deque()
        self._events: collections.deque[Event] = collections.deque()
        self._call: Any = None
        self._closed = False

    @property
    def next_revision(self) -> int:
        return self._state.next_revision

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        while not self._events:
            self._events.extend(Event.from_pb(e) for e in (await self.next_response()).events)
        return self._events.popleft()

    async def next_response(self) -> rpc_pb2.WatchResponse:
        """As ``Watch.next_response``; raises ``StopAsyncIteration`` once the watch is cancelled."""
        while not self._pending:
            if self._closed:
                raise StopAsyncIteration
            self._pending.extend(await self._receive())
        return self._pending.popleft()

    async def responses(self) -> AsyncIterator[rpc_pb2.WatchResponse]:
        """``next_response`` until the watch is cancelled."""
        while True:
            try:
                yield await self.next_response()
            except StopAsyncIteration:
                return

    async def establish(self) -> None:
        while not self._state.established:
            self._pending.extend(await self._receive())

    async def _receive(self) -> list[rpc_pb2.WatchResponse]:
        try:
            if self._call is None:
                executor, endpoint = self._client._executor, self._state.endpoint
                unauthenticated = await drive_async(executor.authenticate(endpoint, self._client.timeout),
                                                    self._client._call)
                if unauthenticated is not None:
                    raise unauthenticated  # never open the stream under the certificate's identity instead
                channel = self._client.channel(endpoint)
                metadata = WATCH_METADATA + executor.auth_metadata()
                self._call = r.WATCH.on(channel, rpc_pb2.WatchRequest)(metadata=metadata)
                await self._call.write(self._state.create_request())
            response = await self._call.read()
            if response is grpc.aio.EOF:
                raise EOFError
            fresh = self._state.receive(response)
            return [] if fresh is None else [fresh]
        except (grpc.RpcError, EOFError, asyncio.CancelledError) as exc:
            if self._closed:
                return []
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise_if_cancelling()  # a cancel grpc.aio reported as an RpcError: stop, do not reconnect
            self._drop_stream()
            await asyncio.sleep(self._state.stream_failed(exc if isinstance(exc, grpc.RpcError) else None))
            return []
        except ClientError:
            self.cancel()
            raise

    async def request_progress(self) -> None:
        if self._call is not None:
            await self._call.write(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

    def _drop_stream(self) -> None:
        if self._call is not None:
            self._call.cancel()
        self._call = None

    def cancel(self) -> None:
        self._closed = True
        self._drop_stream()

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.cancel()


class AsyncKeepAlive:
    """Refreshes a lease from a task while the ``async with`` block runs (see ``sync.KeepAlive``)."""

    def __init__(self, client: AsyncClient, lease: Lease) -> None:
        self._client, self._lease = client, lease
        self.lost = asyncio.Event()
        self.error: ClientError | None = None
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        interval = keepalive_interval(self._lease.ttl)
        while True:
            await asyncio.sleep(interval)
            try:
                ttl = await self._client.lease_keep_alive_once(self._lease.id, timeout=interval)
                interval = keepalive_interval(ttl)
            except LeaseNotFound as exc:
                self.error = exc
                self.lost.set()
                return
            except ClientError as exc:
                self.error = exc
                interval = keepalive_interval(self._lease.ttl) / 2

    async def __aenter__(self) -> AsyncKeepAlive:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


if TYPE_CHECKING:

    class AsyncLease(Lease):
        """What ``AsyncClient.lease_grant`` returns, as the type checker sees it."""

        def revoke(self) -> Awaitable[None]: ...
        def time_to_live(self, keys: bool = False) -> Awaitable[LeaseInfo]: ...
        def keep_alive(self) -> AsyncKeepAlive: ...

    class AsyncTxn(BoundTxn):
        """What ``AsyncClient.txn`` returns, as the type checker sees it."""

        def commit(self, timeout: float | None = None) -> Awaitable[TxnResult]: ...
