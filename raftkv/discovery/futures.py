"""The futures a balanced unary call returns from ``future()``.

``BalancedFuture`` drives the attempts of one call from gRPC's own completion callbacks: each attempt is
the instance channel's native future, and when one fails the next is started from its callback, on
another instance, by the same rules as a blocking call (``calls.CallRules``). No thread is handed the
call, so a future costs what a plain channel's future costs plus the pick (measured with
``python -m raftkv.discovery.bench``; a thread per call cost about a fifth more CPU per call).

``ThreadFuture`` wraps a call that does need a thread of its own: a hedged one, which waits for the first
of several attempts.

Both are ``grpc.Future`` objects; ``BalancedFuture`` is also a ``grpc.Call`` (code, details, metadata of
the attempt that answered or failed last), as a plain channel's future is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any, Protocol

import grpc

from raftkv.discovery.endpoint import Endpoint


class Attempts(Protocol):
    """What a balanced method offers to drive a call's attempts (see ``balanced._UnaryUnary``)."""

    def begin_attempt(self, now: float, key: bytes | None, tried: list[str]) -> Endpoint | None: ...

    def end_attempt(self, endpoint: Endpoint, started: float, error: grpc.RpcError | None, attempts: int,
                    deadline: float | None) -> tuple[float, bool]: ...

    def abandon_attempt(self, endpoint: Endpoint, started: float) -> None: ...

    def no_instance(self) -> grpc.RpcError: ...

    def _callable(self, endpoint: Endpoint) -> Any: ...


class BalancedFuture(grpc.Future, grpc.Call):
    """One balanced unary call in flight, its attempts chained by completion callbacks.

    One attempt is in flight at a time, so the future holds it (and its instance and start) itself. The
    state changes once, from running to done, under a plain lock; an event is made only for a caller that
    waits before the answer is there (a callback-driven caller never does)."""

    def __init__(self, method: Attempts, request: Any, deadline: float | None, key: bytes | None,
                 kwargs: dict[str, Any]) -> None:
        self._method, self._request, self._deadline, self._key = method, request, deadline, key
        self._kwargs = kwargs
        self._tried: list[str] = []
        self._lock = threading.Lock()
        self._done = self._cancelled = False
        self._result: Any = None
        self._error: BaseException | None = None
        self._event: threading.Event | None = None
        self._callbacks: list[Callable[[Any], None]] = []
        self._attempt: Any = None  # the attempt's own future (a grpc.Call)
        self._endpoint: Endpoint | None = None
        self._started = 0.0

    # ----------------------------------------------------------------- attempts

    def start(self, now: float) -> BalancedFuture:
        self._launch(now, None)
        return self

    def _launch(self, now: float, error: grpc.RpcError | None) -> None:
        method = self._method
        endpoint = method.begin_attempt(now, self._key, self._tried)
        if endpoint is None:
            self._finish(None, error or method.no_instance())
            return
        remaining = None if self._deadline is None else max(0.0, self._deadline - now)
        self._endpoint, self._started = endpoint, now
        self._attempt = attempt = method._callable(endpoint).future(self._request, timeout=remaining,
                                                                    **self._kwargs)
        if self._cancelled:  # cancel() ran meanwhile and may not have seen this attempt
            attempt.cancel()
        attempt.add_done_callback(self._attempt_done)

    def _attempt_done(self, attempt: Any) -> None:
        endpoint, started = self._endpoint, self._started
        assert endpoint is not None
        if self._cancelled:
            self._method.abandon_attempt(endpoint, started)
            return
        try:
            error = attempt.exception()
        except grpc.FutureCancelledError:  # cancelled under us (its channel closed): nothing to learn from it
            self._method.abandon_attempt(endpoint, started)
            self._finish(None, attempt)
            return
        end, retry = self._method.end_attempt(endpoint, started, error, len(self._tried) + 1, self._deadline)
        if error is None:
            self._finish(attempt.result(), None)
        elif retry:
            self._tried.append(endpoint.id)
            self._launch(end, error)
        else:
            self._finish(None, error)

    def _finish(self, result: Any, error: BaseException | None, cancelled: bool = False) -> bool:
        with self._lock:
            if self._done:
                return False
            self._result, self._error, self._cancelled, self._done = result, error, cancelled, True
            event, callbacks, self._callbacks = self._event, self._callbacks, []
        if event is not None:
            event.set()
        for callback in callbacks:
            callback(self)
        return True

    # ----------------------------------------------------------------- grpc.Future

    def cancel(self) -> bool:
        if not self._finish(None, None, cancelled=True):
            return False
        attempt = self._attempt
        if attempt is not None:
            attempt.cancel()
        return True

    def cancelled(self) -> bool:
        return self._cancelled

    def running(self) -> bool:
        return not self._done

    def done(self) -> bool:
        return self._done

    def _wait(self, timeout: float | None) -> None:
        if not self._done:
            with self._lock:
                if not self._done and self._event is None:
                    self._event = threading.Event()
                event = self._event
            if event is not None and not event.wait(timeout):
                raise grpc.FutureTimeoutError()
        if self._cancelled:
            raise grpc.FutureCancelledError()

    def result(self, timeout: float | None = None) -> Any:
        self._wait(timeout)
        if self._error is not None:
            raise self._error
        return self._result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        return self._error

    def traceback(self, timeout: float | None = None) -> Any:
        error = self.exception(timeout)
        return None if error is None else error.__traceback__

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        if not self._done:
            with self._lock:
                if not self._done:
                    self._callbacks.append(fn)
                    return
        fn(self)

    # ----------------------------------------------------------------- grpc.Call (of the last attempt)

    def _last(self) -> Any:
        return self._attempt if self._attempt is not None else self._error

    def code(self) -> grpc.StatusCode | None:
        if self._cancelled:
            return grpc.StatusCode.CANCELLED
        last = self._last()
        return None if last is None else last.code()

    def details(self) -> str | None:
        last = self._last()
        return None if last is None else last.details()

    def initial_metadata(self) -> Any:
        last = self._last()
        return None if last is None else last.initial_metadata()

    def trailing_metadata(self) -> Any:
        last = self._last()
        return None if last is None else last.trailing_metadata()

    def is_active(self) -> bool:
        return not self._done

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def add_callback(self, callback: Callable[[], None]) -> bool:
        if not self._done:
            with self._lock:
                if not self._done:
                    self._callbacks.append(lambda _: callback())
                    return True
        return False


class ThreadFuture(grpc.Future):
    """A ``grpc.Future`` over a ``concurrent.futures.Future`` of a call run on a worker thread."""

    def __init__(self, inner: futures.Future[Any]) -> None:
        self._inner = inner

    def cancel(self) -> bool:
        return self._inner.cancel()

    def cancelled(self) -> bool:
        return self._inner.cancelled()

    def running(self) -> bool:
        return self._inner.running()

    def done(self) -> bool:
        return self._inner.done()

    def result(self, timeout: float | None = None) -> Any:
        return self._inner.result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._inner.exception(timeout)

    def traceback(self, timeout: float | None = None) -> Any:
        error = self._inner.exception(timeout)
        return None if error is None else error.__traceback__

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._inner.add_done_callback(lambda _: fn(self))
