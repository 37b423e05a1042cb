"""One attempt of a balanced call: the rules every way of calling shares, written once.

An attempt is picked (the policy, among the candidates, not an instance this call already tried), counted
in flight, and when it ends its outcome is accounted (latency, failures, ejection), the retry decision is
taken (``calls.CallRules``, within the budget and the caller's deadline) and ``on_attempt`` is told.
Blocking unary calls, ``future()`` (``futures.BalancedFuture``), hedges and streams of the blocking channel
(``balanced.py``) and every call of the asyncio channel (``aio_balanced.py``) go through ``Attempts``, so
the twins cannot drift apart: what a tool learns from ``on_attempt`` is the same whichever channel it
watches.

An attempt's end is also where an instance that left the registry is let go: the end of the last call in
flight to it tells the channel (``retired``), which closes that instance's connection then, not later.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import grpc

from raftkv.discovery.budget import RetryBudget
from raftkv.discovery.calls import CallRules
from raftkv.discovery.endpoint import Endpoint
from raftkv.discovery.pool import Outcome, Pool, outcome_of

#: ``on_attempt(instance_id, started, code)``: called as each attempt ends (``started`` is monotonic time).
#: Attempts abandoned by the channel itself (a hedge that lost the race, a cancelled call) are not told.
AttemptObserver = Callable[[str, float, grpc.StatusCode], None]
#: ``retired(endpoint)``: the last attempt in flight to an endpoint that left the pool has ended.
RetiredObserver = Callable[[Endpoint], None]


class Attempts:
    """The attempt rules of one channel over its pool. ``lock`` guards the pool and the budget: the
    blocking channel's ``threading.Lock`` (attempts begin on callers' threads and end on gRPC's), the
    asyncio channel's ``contextlib.nullcontext()`` (everything runs on its event loop). Observers are told
    outside it."""

    def __init__(self, pool: Pool, rules: CallRules, budget: RetryBudget, lock: AbstractContextManager[object],
                 on_attempt: AttemptObserver | None = None, retired: RetiredObserver | None = None) -> None:
        self.pool, self.rules, self.budget = pool, rules, budget
        self._lock = lock
        #: Told of every attempt when it ends: (instance id, monotonic start, status code).
        self.on_attempt = on_attempt
        self._retired = retired

    def begin(self, now: float, key: bytes | None, tried: Sequence[str] = (), *, first: bool = False,
              charge: bool = False) -> Endpoint | None:
        """Pick the instance for the next attempt (not one in ``tried``) and count it in flight; None if
        there is none. ``first``: the call's first attempt, which counts the call for the retry budget;
        ``charge``: an attempt the budget must pay for up front (a hedge), refused if it cannot."""
        with self._lock:
            if first:
                self.budget.deposit(now)
            endpoint = self.pool.pick(now, key, tried)
            if endpoint is None or (charge and not self.budget.withdraw(now)):
                return None
            self.pool.begin(endpoint)
            return endpoint

    def end(self, endpoint: Endpoint, started: float, error: grpc.RpcError | None, *, idempotent: bool = False,
            attempts: int = 1, deadline: float | None = None) -> tuple[float, bool]:
        """Account a unary attempt that ended (``error`` None: it succeeded); returns (now, whether to try
        again elsewhere)."""
        code = grpc.StatusCode.OK if error is None else error.code()
        details = None if error is None else error.details()
        return self._ended(endpoint, started, code, outcome_of(code, details), error, idempotent, attempts,
                           deadline)

    def end_stream(self, endpoint: Endpoint, started: float, code: grpc.StatusCode, details: str | None) -> None:
        """Account a stream that ended with ``code`` (never tried again: its messages may have been consumed)."""
        self._ended(endpoint, started, code, outcome_of(code, details), None, False, 1, None)

    def abandon(self, endpoint: Endpoint, started: float) -> None:
        """An attempt the channel itself gave up on (cancelled): it says nothing about the instance."""
        if self._settle(endpoint, started, Outcome.ABANDONED, time.monotonic(), None, False, 1, None)[1]:
            self._let_go(endpoint)

    def _ended(self, endpoint: Endpoint, started: float, code: grpc.StatusCode, outcome: Outcome,
               error: grpc.RpcError | None, idempotent: bool, attempts: int,
               deadline: float | None) -> tuple[float, bool]:
        end = time.monotonic()
        retry, drained = self._settle(endpoint, started, outcome, end, error, idempotent, attempts, deadline)
        if drained:
            self._let_go(endpoint)
        if self.on_attempt is not None:
            self.on_attempt(endpoint.id, started, code)
        return end, retry

    def _settle(self, endpoint: Endpoint, started: float, outcome: Outcome, now: float,
                error: grpc.RpcError | None, idempotent: bool, attempts: int,
                deadline: float | None) -> tuple[bool, bool]:
        """What an attempt's end changes in the pool and the budget: (retry ``error`` elsewhere, the
        endpoint left the pool and this was its last attempt in flight)."""
        with self._lock:
            drained = self.pool.end(endpoint, started, outcome, now)
            retry = (error is not None
                     and self.rules.may_retry(error, outcome, idempotent, attempts, len(self.pool.endpoints),
                                              deadline, now, self.budget))
            return retry, drained

    def _let_go(self, endpoint: Endpoint) -> None:
        if self._retired is not None:
            self._retired(endpoint)


class ObservedAttempts:
    """What both channels offer of their ``Attempts``: the ``on_attempt`` observer, settable at any time."""

    _attempts: Attempts

    @property
    def on_attempt(self) -> AttemptObserver | None:
        """Told of every attempt when it ends: (instance id, monotonic start, status code)."""
        return self._attempts.on_attempt

    @on_attempt.setter
    def on_attempt(self, observer: AttemptObserver | None) -> None:
        self._attempts.on_attempt = observer
