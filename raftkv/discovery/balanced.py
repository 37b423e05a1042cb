"""``BalancedChannel``: a ``grpc.Channel`` over every instance of a service, balanced in Python.

Generated stubs take it unchanged (``OrdersStub(channel)``), and so does the generic
``channel.unary_unary(path, request_serializer, response_deserializer)``; streams too. Each instance gets a
channel of its own with a local subchannel pool (``grpc.use_local_subchannel_pool``): one connection per
instance, never shared with another channel that happens to have equal arguments, so its health and load
are its own. Under it:

- a ``Resolver`` keeps the instances current (static stability included);
- ``Pool`` picks with the policy (``p2c`` by default) among the usable, non-ejected instances;
- one ``grpc.health.v1.Health/Watch`` stream per instance (``health_check=True``) tells NOT_SERVING and a
  lost connection within milliseconds; an instance without the health service counts as healthy;
- ``CallRules`` decides retries (elsewhere, within the budget and the caller's deadline) and hedging.

Unary calls are balanced per call. A stream is balanced when it starts and stays on its instance; it is
not retried (its messages may have been consumed), but its outcome feeds the instance's statistics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from raftkv.discovery import record
from raftkv.discovery.attempts import AttemptObserver, Attempts, ObservedAttempts
from raftkv.discovery.budget import RetryBudget
from raftkv.discovery.calls import CallRules, Metadata, NoInstance
from raftkv.discovery.endpoint import Endpoint, Health
from raftkv.discovery.futures import BalancedFuture, ThreadFuture
from raftkv.discovery.pool import Pool
from raftkv.discovery.resolver import Resolver
from raftkv.discovery.view import Change

log = logging.getLogger("raftkv.discovery")

#: Channel arguments every per-instance channel gets: its own subchannel pool (one connection per instance).
INSTANCE_OPTIONS = (("grpc.use_local_subchannel_pool", 1),)
HEALTH_BACKOFF = (0.05, 1.0)
#: How long the connection of an instance that left the registry stays open for the calls in flight to it
#: at most. The instance itself drains them (it revoked its lease first for that), so the server's own grace
#: ends them sooner, and the last one's end closes the connection; this only bounds a call with no deadline.
DRAIN_GRACE = 30.0
_SERVING = health_pb2.HealthCheckResponse.SERVING


class _Conn:
    """One instance's channel and its health watcher."""

    def __init__(self, owner: BalancedChannel, endpoint: Endpoint) -> None:
        self.owner, self.endpoint = owner, endpoint
        self.channel = owner._dial(endpoint.addr)
        self.closed = threading.Event()
        self._drained = threading.Event()
        self._health_call: Any = None
        if owner.health_check:
            threading.Thread(target=self._watch_health, name=f"health-{endpoint.addr}", daemon=True).start()

    def _watch_health(self) -> None:
        watch = health_pb2_grpc.HealthStub(self.channel).Watch
        request = health_pb2.HealthCheckRequest(service=self.owner.health_service)
        delay = HEALTH_BACKOFF[0]
        while not self.closed.is_set():
            try:
                self._health_call = watch(request)
                if self.closed.is_set():
                    self._health_call.cancel()
                for response in self._health_call:
                    self.owner._set_health(self.endpoint, Health.SERVING if response.status == _SERVING
                                           else Health.NOT_SERVING)
                    delay = HEALTH_BACKOFF[0]
            except grpc.RpcError as exc:
                if self.closed.is_set():
                    return
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    self.owner._set_health(self.endpoint, Health.UNKNOWN)  # no health service: healthy
                    return
            if self.closed.is_set():
                return
            self.owner._set_health(self.endpoint, Health.UNREACHABLE)
            self.closed.wait(delay)
            delay = min(HEALTH_BACKOFF[1], delay * 2)

    def _stop_watching(self) -> None:
        self.closed.set()
        call = self._health_call
        if call is not None:
            call.cancel()

    def close(self) -> None:
        self._stop_watching()
        self.channel.close()

    def retire(self, in_flight: bool) -> None:
        """The instance left the registry: stop watching it, and close its connection once the calls
        ``in_flight`` to it have ended (``drained``; within ``DRAIN_GRACE``). Closing at once would cancel
        them on this side while the instance is draining them."""
        self._stop_watching()
        if not in_flight:
            self.channel.close()
            return
        threading.Thread(target=self._close_when_drained, name=f"drain-{self.endpoint.addr}", daemon=True).start()

    def drained(self) -> None:
        """The last call in flight has ended, or the balanced channel closes. The close itself is left to
        the draining thread: a call may end on the gRPC thread of this very channel, and closing a channel
        waits for that thread to finish its calls."""
        self._drained.set()

    def _close_when_drained(self) -> None:
        self._drained.wait(DRAIN_GRACE)
        self.channel.close()
        with self.owner._lock:
            self.owner._retiring.discard(self)


class _Method:
    """What every multi-callable of the channel shares: its method and a per-instance callable cache."""

    kind = "unary_unary"

    def __init__(self, owner: BalancedChannel, method: str, serializer: Any, deserializer: Any) -> None:
        self._owner, self._method = owner, method
        self._serializer, self._deserializer = serializer, deserializer
        self._idempotent = owner.rules.idempotent(method)
        self._callables: dict[_Conn, Any] = {}

    def _callable(self, endpoint: Endpoint) -> Any:
        conn: _Conn = endpoint.conn
        made = self._callables.get(conn)
        if made is None:
            if len(self._callables) > 2 * len(self._owner._pool.endpoints) + 8:
                self._callables = {c: m for c, m in self._callables.items() if not c.closed.is_set()}
            make = getattr(conn.channel, self.kind)
            made = self._callables[conn] = make(self._method, request_serializer=self._serializer,
                                                response_deserializer=self._deserializer,
                                                _registered_method=False)
        return made


class _UnaryUnary(_Method, grpc.UnaryUnaryMultiCallable):
    def __call__(self, request: Any, timeout: float | None = None, metadata: Metadata = None,
                 credentials: grpc.CallCredentials | None = None, wait_for_ready: bool | None = None,
                 compression: grpc.Compression | None = None) -> Any:
        return self._invoke(request, timeout, metadata, credentials, wait_for_ready, compression, False)

    def with_call(self, request: Any, timeout: float | None = None, metadata: Metadata = None,
                  credentials: grpc.CallCredentials | None = None, wait_for_ready: bool | None = None,
                  compression: grpc.Compression | None = None) -> tuple[Any, grpc.Call]:
        return self._invoke(request, timeout, metadata, credentials, wait_for_ready,
                            compression, True)

    def future(self, request: Any, timeout: float | None = None, metadata: Metadata = None,
               credentials: grpc.CallCredentials | None = None, wait_for_ready: bool | None = None,
               compression: grpc.Compression | None = None) -> grpc.Future:
        owner = self._owner
        if owner.rules.hedge_delay is not None and self._idempotent:  # waits on several attempts: a thread
            return ThreadFuture(owner._executor().submit(
                self._invoke, request, timeout, metadata, credentials, wait_for_ready, compression, False))
        now = time.monotonic()
        if timeout is None:
            timeout = owner.default_timeout
        key = owner.rules.key(request, metadata) if owner._keyed else None
        given = {"metadata": metadata, "credentials": credentials, "wait_for_ready": wait_for_ready,
                 "compression": compression}
        return BalancedFuture(self, request, None if timeout is None else now + timeout, key,
                              {k: v for k, v in given.items() if v is not None}).start(now)

    # ------------------------------------------------ one attempt: the rules shared by every way to call

    def begin_attempt(self, now: float, key: bytes | None, tried: list[str]) -> Endpoint | None:
        return self._owner._attempts.begin(now, key, tried, first=not tried)

    def end_attempt(self, endpoint: Endpoint, started: float, error: grpc.RpcError | None, attempts: int,
                    deadline: float | None) -> tuple[float, bool]:
        return self._owner._attempts.end(endpoint, started, error, idempotent=self._idempotent, attempts=attempts,
                                         deadline=deadline)

    def abandon_attempt(self, endpoint: Endpoint, started: float) -> None:
        self._owner._attempts.abandon(endpoint, started)

    def no_instance(self) -> grpc.RpcError:
        return self._owner._no_instance()

    def _invoke(self, request: Any, timeout: float | None, metadata: Metadata, credentials: Any,
                wait_for_ready: bool | None, compression: Any, with_call: bool) -> Any:
        owner = self._owner
        now = time.monotonic()
        if timeout is None:
            timeout = owner.default_timeout
        deadline = None if timeout is None else now + timeout
        key = owner.rules.key(request, metadata) if owner._keyed else None
        if owner.rules.hedge_delay is not None and self._idempotent:
            return owner._hedged(self, request, deadline, key, metadata, credentials, wait_for_ready,
                                 compression, with_call)
        tried: list[str] = []
        error: grpc.RpcError | None = None
        while True:
            endpoint = self.begin_attempt(now, key, tried)
            if endpoint is None:
                raise error or owner._no_instance()
            call = self._callable(endpoint)
            remaining = None if deadline is None else max(0.0, deadline - now)
            try:
                if with_call:
                    result = call.with_call(request, timeout=remaining, metadata=metadata,
                                            credentials=credentials, wait_for_ready=wait_for_ready,
                                            compression=compression)
                else:
                    result = call(request, timeout=remaining, metadata=metadata, credentials=credentials,
                                  wait_for_ready=wait_for_ready, compression=compression)
            except grpc.RpcError as exc:
                end, retry = self.end_attempt(endpoint, now, exc, len(tried) + 1, deadline)
                if not retry:
                    raise
                tried.append(endpoint.id)
                error, now = exc, end
                continue
            self.end_attempt(endpoint, now, None, len(tried) + 1, deadline)
            return result


class _StreamMethod(_Method):
    """Streams: balanced when they start, then on their instance until they end."""

    def _start(self, request: Any, timeout: float | None, metadata: Metadata, **kwargs: Any) -> Any:
        owner = self._owner
        now = time.monotonic()
        endpoint = owner._attempts.begin(now, owner.rules.key(None, metadata) if owner._keyed else None)
        if endpoint is None:
            raise owner._no_instance()
        call = self._callable(endpoint)(request, timeout=owner.default_timeout if timeout is None else timeout,
                                        metadata=metadata, **kwargs)

        def finished(done: Any) -> None:
            owner._attempts.end_stream(endpoint, now, done.code(), done.details())

        if not call.add_callback(lambda: finished(call)):
            finished(call)  # already over
        return call


class _UnaryStream(_StreamMethod, grpc.UnaryStreamMultiCallable):
    kind = "unary_stream"

    def __call__(self, request: Any, timeout: float | None = None, metadata: Metadata = None,
                 **kwargs: Any) -> Any:
        return self._start(request, timeout, metadata, **kwargs)


class _StreamStream(_StreamMethod, grpc.StreamStreamMultiCallable):
    kind = "stream_stream"

    def __call__(self, request_iterator: Iterator[Any], timeout: float | None = None, metadata: Metadata = None,
                 **kwargs: Any) -> Any:
        return self._start(request_iterator, timeout, metadata, **kwargs)


class _StreamUnary(_StreamMethod, grpc.StreamUnaryMultiCallable):
    kind = "stream_unary"

    def __call__(self, request_iterator: Iterator[Any], timeout: float | None = None, metadata: Metadata = None,
                 **kwargs: Any) -> Any:
        return self.future(request_iterator, timeout, metadata, **kwargs).result()

    def with_call(self, request_iterator: Iterator[Any], timeout: float | None = None, metadata: Metadata = None,
                  **kwargs: Any) -> tuple[Any, grpc.Call]:
        call = self.future(request_iterator, timeout, metadata, **kwargs)
        return call.result(), call

    def future(self, request_iterator: Iterator[Any], timeout: float | None = None, metadata: Metadata = None,
               **kwargs: Any) -> Any:
        owner = self._owner
        now = time.monotonic()
        endpoint = owner._attempts.begin(now, owner.rules.key(None, metadata) if owner._keyed else None)
        if endpoint is None:
            raise owner._no_instance()
        call = self._callable(endpoint).future(
            request_iterator, timeout=owner.default_timeout if timeout is None else timeout, metadata=metadata,
            **kwargs)

        def finished(done: Any) -> None:
            owner._attempts.end_stream(endpoint, now, done.code(), done.details())

        call.add_done_callback(finished)
        return call


class BalancedChannel(ObservedAttempts, grpc.Channel):
    """See the module docstring and ``raftkv.discovery.channel``."""

    def __init__(self, resolver: Resolver, pool: Pool, rules: CallRules, *,
                 credentials: grpc.ChannelCredentials | None = None,
                 options: Sequence[tuple[str, Any]] = (), health_check: bool = True, health_service: str = "",
                 retry_budget: RetryBudget | None = None, default_timeout: float | None = None,
                 owns_resolver: bool = True, on_attempt: AttemptObserver | None = None) -> None:
        self.resolver, self.rules = resolver, rules
        self.service = resolver.service
        self.health_check, self.health_service = health_check, health_service
        self.default_timeout = default_timeout
        self._credentials = credentials
        self._options = [*INSTANCE_OPTIONS, *options]
        self._pool = pool
        self._lock = threading.Lock()
        self._budget = retry_budget or RetryBudget()
        self._attempts = Attempts(pool, rules, self._budget, self._lock, on_attempt,
                                  lambda endpoint: endpoint.conn.drained())
        #: Connections of instances that left, kept open for the calls in flight to them.
        self._retiring: set[_Conn] = set()
        self._keyed = rules.hash_key is not None or rules.hash_header is not None
        self._owns_resolver = owns_resolver
        self._closed = False
        self._workers: futures.ThreadPoolExecutor | None = None
        self._subscribers: dict[Callable[[grpc.ChannelConnectivity], None], grpc.ChannelConnectivity | None] = {}
        resolver.subscribe(self._on_change)

    # ----------------------------------------------------------------- instances

    def _dial(self, addr: str) -> grpc.Channel:
        if self._credentials is None:
            return grpc.insecure_channel(addr, options=self._options)
        return grpc.secure_channel(addr, self._credentials, options=self._options)

    def _on_change(self, changes: list[Change], instances: Mapping[str, record.Instance]) -> None:
        with self._lock:
            if self._closed:
                return
            added, removed = self._pool.update(instances)
            for endpoint in added:  # before the lock is released: a pick may choose it at once
                endpoint.conn = _Conn(self, endpoint)
            # Under the lock, with the removal: the attempt whose end drains an endpoint sees it removed.
            retiring = [(endpoint.conn, endpoint.outstanding > 0) for endpoint in removed]
            self._retiring.update(conn for conn, in_flight in retiring if in_flight)
        for conn, in_flight in retiring:
            conn.retire(in_flight)
        self._notify_state()

    def _set_health(self, endpoint: Endpoint, health: Health) -> None:
        with self._lock:
            if self._pool.endpoints.get(endpoint.id) is endpoint:
                self._pool.set_health(endpoint.id, health, time.monotonic())
        self._notify_state()

    def _no_instance(self) -> NoInstance:
        known = len(self._pool.endpoints)
        why = (f"registry unreachable: {self.resolver.last_error}" if self.resolver.last_error
               else "none registered" if not known else f"none of {known} usable")
        return NoInstance(f"no instance of {self.service!r} to call ({why})")

    def wait_for_instances(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` instances are candidates (usable and not ejected)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                ready = sum(1 for e in self._pool.candidates(time.monotonic()) if e.usable(time.monotonic()))
            if ready >= count:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def instances(self) -> list[dict[str, Any]]:
        """A snapshot of every instance as the balancer sees it (for tools and tests)."""
        now = time.monotonic()
        with self._lock:
            candidates = {e.id for e in self._pool.candidates(now)}
            return [{"id": e.id, "addr": e.addr, "weight": e.weight, "health": e.health.value,
                     "outstanding": e.outstanding, "calls": e.calls, "failures": e.failures,
                     "ejected": self._pool.detector.is_ejected(e.id), "candidate": e.id in candidates,
                     "latency_ms": round(e.ewma.get(now) * 1000, 3)}
                    for e in sorted(self._pool.endpoints.values(), key=lambda e: e.id)]

    def _executor(self) -> futures.ThreadPoolExecutor:
        with self._lock:
            if self._workers is None:
                self._workers = futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="balanced")
            return self._workers

    # ----------------------------------------------------------------- hedging

    def _hedged(self, method: _UnaryUnary, request: Any, deadline: float | None, key: bytes | None,
                metadata: Metadata, credentials: Any, wait_for_ready: bool | None, compression: Any,
                with_call: bool) -> Any:
        """An idempotent call sent to a second instance when the first has not answered within
        ``hedge_delay``; the first success wins and the others are cancelled. Hedges and retries come out
        of the same budget and the same ``max_attempts``."""
        rules, attempts = self.rules, self._attempts
        done = threading.Condition()
        running: list[tuple[Endpoint, Any, float]] = []
        finished: list[tuple[Endpoint, Any, float]] = []
        tried: list[str] = []
        now = time.monotonic()

        def launch(at: float, charge: bool = False) -> bool:
            """Start an attempt on an instance not tried yet; a hedge (``charge``) only if the budget allows."""
            endpoint = attempts.begin(at, key, tried, first=not tried, charge=charge)
            if endpoint is None:
                return False
            tried.append(endpoint.id)
            remaining = None if deadline is None else max(0.0, deadline - at)
            future = method._callable(endpoint).future(request, timeout=remaining, metadata=metadata,
                                                       credentials=credentials, wait_for_ready=wait_for_ready,
                                                       compression=compression)
            entry = (endpoint, future, at)
            running.append(entry)

            def on_done(_: Any) -> None:
                with done:
                    finished.append(entry)
                    done.notify_all()

            future.add_done_callback(on_done)
            return True

        if not launch(now):
            raise self._no_instance()
        error: grpc.RpcError | None = None
        handled = 0
        while True:
            with done:
                hedge_at = time.monotonic() + rules.hedge_delay if rules.hedge_delay else None
                done.wait_for(lambda: len(finished) > handled,
                              None if hedge_at is None else max(0.0, hedge_at - time.monotonic()))
                fresh = finished[handled:]
                handled = len(finished)
            now = time.monotonic()
            for endpoint, future, started in fresh:
                running.remove((endpoint, future, started))
                exc = future.exception()
                now, again = attempts.end(endpoint, started, exc, idempotent=True, attempts=len(tried),
                                          deadline=deadline)
                if exc is None:
                    for other, other_future, other_started in running:
                        other_future.cancel()
                        attempts.abandon(other, other_started)
                    return (future.result(), future) if with_call else future.result()
                error = exc
                if again:
                    launch(now)
            if not fresh and len(tried) < rules.max_attempts and (deadline is None or now < deadline):
                launch(now, charge=True)
            if not running:
                raise error or self._no_instance()

    # ----------------------------------------------------------------- grpc.Channel

    def unary_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                    _registered_method: bool = False) -> _UnaryUnary:
        return _UnaryUnary(self, method, request_serializer, response_deserializer)

    def unary_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     _registered_method: bool = False) -> _UnaryStream:
        return _UnaryStream(self, method, request_serializer, response_deserializer)

    def stream_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     _registered_method: bool = False) -> _StreamUnary:
        return _StreamUnary(self, method, request_serializer, response_deserializer)

    def stream_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                      _registered_method: bool = False) -> _StreamStream:
        return _StreamStream(self, method, request_serializer, response_deserializer)

    def _state(self) -> grpc.ChannelConnectivity:
        with self._lock:
            if self._closed:
                return grpc.ChannelConnectivity.SHUTDOWN
            now = time.monotonic()
            if any(e.usable(now) for e in self._pool.candidates(now)):
                return grpc.ChannelConnectivity.READY
            return (grpc.ChannelConnectivity.TRANSIENT_FAILURE if self._pool.endpoints
                    else grpc.ChannelConnectivity.CONNECTING)

    def _notify_state(self) -> None:
        if not self._subscribers:
            return
        state = self._state()
        for callback, last in list(self._subscribers.items()):
            if last is not state:
                self._subscribers[callback] = state
                callback(state)

    def subscribe(self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False) -> None:
        """Connectivity of the service as a whole: READY while some instance can take calls."""
        self._subscribers[callback] = None
        self._notify_state()

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        self._subscribers.pop(callback, None)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            endpoints = list(self._pool.endpoints.values())
            retiring = list(self._retiring)
        if self._owns_resolver:
            self.resolver.stop()
        for endpoint in endpoints:
            endpoint.conn.close()
        for conn in retiring:
            conn.drained()
        if self._workers is not None:
            self._workers.shutdown(wait=False)

    def __enter__(self) -> BalancedChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
