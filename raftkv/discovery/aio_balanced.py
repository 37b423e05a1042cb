"""``AsyncBalancedChannel``: the asyncio twin of ``balanced.BalancedChannel`` (a ``grpc.aio.Channel``).

The same pool, policies, rules and budget, and the same rules for an attempt (``attempts.Attempts``, which
also tells ``on_attempt``); one ``grpc.aio`` channel per instance; a health-watch task per instance. Create
it inside the running event loop (``await raftkv.discovery.aio.channel(...)``). A unary call returns an
awaitable call object, as grpc.aio's do; hedging is offered by the blocking channel only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from raftkv.discovery import record
from raftkv.discovery.attempts import AttemptObserver, Attempts, ObservedAttempts
from raftkv.discovery.balanced import DRAIN_GRACE, HEALTH_BACKOFF, INSTANCE_OPTIONS
from raftkv.discovery.budget import RetryBudget
from raftkv.discovery.calls import CallRules, Metadata, NoInstance
from raftkv.discovery.endpoint import Endpoint, Health
from raftkv.discovery.pool import Pool
from raftkv.discovery.resolver import AsyncResolver
from raftkv.discovery.view import Change

_SERVING = health_pb2.HealthCheckResponse.SERVING


class _AsyncConn:
    def __init__(self, owner: AsyncBalancedChannel, endpoint: Endpoint) -> None:
        self.owner, self.endpoint = owner, endpoint
        self.channel = owner._dial(endpoint.addr)
        self.closed = False
        self._drained = asyncio.Event()
        self._task = asyncio.create_task(self._watch_health()) if owner.health_check else None

    async def _watch_health(self) -> None:
        watch = health_pb2_grpc.HealthStub(self.channel).Watch
        request = health_pb2.HealthCheckRequest(service=self.owner.health_service)
        delay = HEALTH_BACKOFF[0]
        while not self.closed:
            try:
                async for response in watch(request):
                    self.owner._set_health(self.endpoint, Health.SERVING if response.status == _SERVING
                                           else Health.NOT_SERVING)
                    delay = HEALTH_BACKOFF[0]
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    self.owner._set_health(self.endpoint, Health.UNKNOWN)
                    return
            if self.closed:
                return
            self.owner._set_health(self.endpoint, Health.UNREACHABLE)
            await asyncio.sleep(delay)
            delay = min(HEALTH_BACKOFF[1], delay * 2)

    async def _stop_watching(self) -> None:
        self.closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def close(self) -> None:
        await self._stop_watching()
        await self.channel.close()

    async def retire(self, in_flight: bool) -> None:
        """As ``balanced._Conn.retire``: the instance left the registry; the calls ``in_flight`` to it are
        let finish, and the last one's end (``drained``; within ``DRAIN_GRACE``) closes the connection."""
        await self._stop_watching()
        if in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), DRAIN_GRACE)
        await self.channel.close()
        self.owner._retiring.discard(self)

    def drained(self) -> None:
        """The last call in flight has ended, or the balanced channel closes."""
        self._drained.set()


class _AsyncMethod:
    kind = "unary_unary"

    def __init__(self, owner: AsyncBalancedChannel, method: str, serializer: Any, deserializer: Any) -> None:
        self._owner, self._method = owner, method
        self._serializer, self._deserializer = serializer, deserializer
        self._idempotent = owner.rules.idempotent(method)
        self._callables: dict[_AsyncConn, Any] = {}

    def _callable(self, endpoint: Endpoint) -> Any:
        conn: _AsyncConn = endpoint.conn
        made = self._callables.get(conn)
        if made is None:
            if len(self._callables) > 2 * len(self._owner._pool.endpoints) + 8:
                self._callables = {c: m for c, m in self._callables.items() if not c.closed}
            made = self._callables[conn] = getattr(conn.channel, self.kind)(
                self._method, request_serializer=self._serializer, response_deserializer=self._deserializer)
        return made



class _BalancedUnaryCall:
    """Awaitable result of a balanced unary call; the attempts run in a task started at once."""

    def __init__(self, run: Any) -> None:
        self._task: asyncio.Task[Any] = asyncio.ensure_future(run)
        self.call: Any = None  # the attempt that answered (or failed last)

    def __await__(self) -> Any:
        return self._task.__await__()

    def cancel(self) -> bool:
        return self._task.cancel()

    def cancelled(self) -> bool:
        return self._task.cancelled()

    def done(self) -> bool:
        return self._task.done()

    def add_done_callback(self, callback: Any) -> None:
        self._task.add_done_callback(lambda _: callback(self))

    async def initial_metadata(self) -> Any:
        await asyncio.wait([self._task])
        return await self.call.initial_metadata() if self.call is not None else ()

    async def trailing_metadata(self) -> Any:
        await asyncio.wait([self._task])
        return await self.call.trailing_metadata() if self.call is not None else ()

    async def code(self) -> grpc.StatusCode:
        await asyncio.wait([self._task])
        return await self.call.code() if self.call is not None else grpc.StatusCode.UNAVAILABLE

    async def details(self) -> str:
        await asyncio.wait([self._task])
        return await self.call.details() if self.call is not None else ""

    def time_remaining(self) -> float | None:
        return self.call.time_remaining() if self.call is not None else None

    async def wait_for_connection(self) -> None:
        await asyncio.wait([self._task])


class _AsyncUnaryUnary(_AsyncMethod):
    def __call__(self, request: Any, *, timeout: float | None = None, metadata: Metadata = None,
                 credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None) -> Any:
        holder = _BalancedUnaryCall.__new__(_BalancedUnaryCall)
        holder.call = None
        holder._task = asyncio.ensure_future(self._invoke(holder, request, timeout, metadata, credentials,
                                                          wait_for_ready, compression))
        return holder

    async def _invoke(self, holder: _BalancedUnaryCall, request: Any, timeout: float | None, metadata: Metadata,
                      credentials: Any, wait_for_ready: bool | None, compression: Any) -> Any:
        owner = self._owner
        attempts = owner._attempts
        now = time.monotonic()
        if timeout is None:
            timeout = owner.default_timeout
        deadline = None if timeout is None else now + timeout
        key = owner.rules.key(request, metadata) if owner._keyed else None
        tried: list[str] = []
        error: grpc.RpcError | None = None
        while True:
            endpoint = attempts.begin(now, key, tried, first=not tried)
            if endpoint is None:
                raise error or owner._no_instance()
            remaining = None if deadline is None else max(0.0, deadline - now)
            call = self._callable(endpoint)(request, timeout=remaining, metadata=metadata, credentials=credentials,
                                            wait_for_ready=wait_for_ready, compression=compression)
            holder.call = call
            try:
                result = await call
            except grpc.RpcError as exc:
                end, retry = attempts.end(endpoint, now, exc, idempotent=self._idempotent, attempts=len(tried) + 1,
                                          deadline=deadline)
                if not retry:
                    raise
                tried.append(endpoint.id)
                error, now = exc, end
                continue
            except asyncio.CancelledError:
                attempts.abandon(endpoint, now)
                raise
            attempts.end(endpoint, now, None, attempts=len(tried) + 1, deadline=deadline)
            return result


class _AsyncStream(_AsyncMethod):
    def __call__(self, request: Any = None, *, timeout: float | None = None, metadata: Metadata = None,
                 **kwargs: Any) -> Any:
        owner = self._owner
        started = time.monotonic()
        endpoint = owner._attempts.begin(started, owner.rules.key(None, metadata) if owner._keyed else None)
        if endpoint is None:
            raise owner._no_instance()
        args = () if request is None and self.kind in ("stream_unary", "stream_stream") else (request,)
        call = self._callable(endpoint)(*args, timeout=owner.default_timeout if timeout is None else timeout,
                                        metadata=metadata, **kwargs)

        async def finished(done: Any) -> None:
            # A grpc.aio call's status is read with ``await`` (the call is over: it answers at once).
            owner._attempts.end_stream(endpoint, started, await done.code(), await done.details())

        call.add_done_callback(lambda done: owner._spawn(finished(done)))
        return call


class _AsyncUnaryStream(_AsyncStream):
    kind = "unary_stream"


class _AsyncStreamUnary(_AsyncStream):
    kind = "stream_unary"


class _AsyncStreamStream(_AsyncStream):
    kind = "stream_stream"


class AsyncBalancedChannel(ObservedAttempts, grpc.aio.Channel):
    def __init__(self, resolver: AsyncResolver, pool: Pool, rules: CallRules, *,
                 credentials: grpc.ChannelCredentials | None = None, options: Sequence[tuple[str, Any]] = (),
                 health_check: bool = True, health_service: str = "", retry_budget: RetryBudget | None = None,
                 default_timeout: float | None = None, on_attempt: AttemptObserver | None = None) -> None:
        self.resolver, self.rules = resolver, rules
        self.service = resolver.service
        self.health_check, self.health_service = health_check, health_service
        self.default_timeout = default_timeout
        self._credentials, self._options = credentials, [*INSTANCE_OPTIONS, *options]
        self._pool = pool
        self._budget = retry_budget or RetryBudget()
        # Everything runs on the event loop: the pool needs no lock.
        self._attempts = Attempts(pool, rules, self._budget, contextlib.nullcontext(), on_attempt,
                                  lambda endpoint: endpoint.conn.drained())
        #: Connections of instances that left, kept open for the calls in flight to them.
        self._retiring: set[_AsyncConn] = set()
        #: Tasks that account a finished stream (kept referenced until done, as asyncio asks).
        self._tasks: set[asyncio.Future[None]] = set()
        self._keyed = rules.hash_key is not None or rules.hash_header is not None
        self._closed = False
        self._state_changed = asyncio.Event()
        resolver.subscribe(self._on_change)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _dial(self, addr: str) -> grpc.aio.Channel:
        if self._credentials is None:
            return grpc.aio.insecure_channel(addr, options=self._options)
        return grpc.aio.secure_channel(addr, self._credentials, options=self._options)

    def _on_change(self, changes: list[Change], instances: Mapping[str, record.Instance]) -> None:
        if self._closed:
            return
        added, removed = self._pool.update(instances)
        for endpoint in added:
            endpoint.conn = _AsyncConn(self, endpoint)
        # With the removal, as the blocking channel does under its lock: an instance that left takes no new
        # call, so one with none in flight now has nothing to wait for, and the end of the last one of the
        # others tells its connection (``drained``).
        retiring = [(endpoint.conn, endpoint.outstanding > 0) for endpoint in removed]
        self._retiring.update(conn for conn, in_flight in retiring if in_flight)
        for conn, in_flight in retiring:
            self._spawn(conn.retire(in_flight))
        self._poke()

    def _set_health(self, endpoint: Endpoint, health: Health) -> None:
        if self._pool.endpoints.get(endpoint.id) is endpoint:
            self._pool.set_health(endpoint.id, health, time.monotonic())
            self._poke()

    def _poke(self) -> None:
        self._state_changed.set()
        self._state_changed = asyncio.Event()

    def _no_instance(self) -> NoInstance:
        known = len(self._pool.endpoints)
        why = (f"registry unreachable: {self.resolver.last_error}" if self.resolver.last_error
               else "none registered" if not known else f"none of {known} usable")
        return NoInstance(f"no instance of {self.service!r} to call ({why})")

    async def wait_for_instances(self, count: int = 1, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while sum(1 for e in self._pool.candidates(time.monotonic()) if e.usable(time.monotonic())) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._state_changed.wait(), min(left, 0.1))
        return True

    def unary_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                    _registered_method: bool | None = False) -> _AsyncUnaryUnary:
        return _AsyncUnaryUnary(self, method, request_serializer, response_deserializer)

    def unary_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     _registered_method: bool | None = False) -> _AsyncUnaryStream:
        return _AsyncUnaryStream(self, method, request_serializer, response_deserializer)

    def stream_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     _registered_method: bool | None = False) -> _AsyncStreamUnary:
        return _AsyncStreamUnary(self, method, request_serializer, response_deserializer)

    def stream_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                      _registered_method: bool | None = False) -> _AsyncStreamStream:
        return _AsyncStreamStream(self, method, request_serializer, response_deserializer)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        if self._closed:
            return grpc.ChannelConnectivity.SHUTDOWN
        now = time.monotonic()
        if any(e.usable(now) for e in self._pool.candidates(now)):
            return grpc.ChannelConnectivity.READY
        if self._pool.endpoints:
            return grpc.ChannelConnectivity.TRANSIENT_FAILURE
        return grpc.ChannelConnectivity.CONNECTING

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        while self.get_state() is last_observed_state:
            await self._state_changed.wait()

    async def channel_ready(self) -> None:
        while self.get_state() is not grpc.ChannelConnectivity.READY:
            await self._state_changed.wait()

    async def close(self, grace: float | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        await self.resolver.stop()
        for endpoint in list(self._pool.endpoints.values()):
            await endpoint.conn.close()
        for conn in self._retiring:
            conn.drained()
        if self._tasks:  # connections draining (told the channel closed) and streams being accounted
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> AsyncBalancedChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
