"""One attempt of a balanced call: the rules every way of calling shares, written once.

An attempt is picked (the policy, among the candidates, not an instance this call already tried), counted
in flight, and when it ends its outcome is accounted (latency, failures, ejection), the retry decision is
taken (``calls.CallRules``, within the budget and the caller's deadline) and ``on_attempt`` is told.
Blocking unary calls, ``future()`` (``futures.BalancedFuture``), hedges and streams of the blocking channel
(``balanced.py``) and every call of the asyncio channel (``aio_balanced.py``) go through ``Attempts``, so
the twins cannot drift apart: what a tool learns from ``on_attempt`` is the same whichever channel it
watches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import grpc

from raftkv.discovery.budget import RetryBudget
from raftkv.discovery.calls import CallRules
from raftkv.discovery.endpoint import Endpoint
from raftkv.discovery.pool import Outcome, Pool, outcome_of

#: ``on_attempt(instance_id, started, code)``: called as each attempt ends (``started`` is monotonic time).
#: Attempts abandoned by the channel itself (a hedge that lost the race, a cancelled call) are not told.
AttemptObserver = Callable[[str, float, grpc.StatusCode], None]


class Attempts:
    """The attempt rules of one channel over its pool. ``lock`` guards the pool: a ``threading.Lock`` for
    the blocking channel (attempts end on gRPC's threads), a ``contextlib.nullcontext()`` for the asyncio
    one (everything runs on its event loop)."""

    def __init__(self, pool: Pool, rules: CallRules, budget: RetryBudget, lock: AbstractContextManager[Any],
                 on_attempt: AttemptObserver | None = None) -> None:
        self.pool, self.rules, self.budget, self.lock = pool, rules, budget, lock
        #: Told of every attempt when it ends: (instance id, monotonic start, status code).
        self.on_attempt = on_attempt

    def begin(self, now: float, key: bytes | None, tried: Sequence[str] = (), *, first: bool = False,
              charge: bool = False) -> Endpoint | None:
        """Pick the instance for the next attempt (not one in ``tried``) and count it in flight; None if
        there is none. ``first``: the call's first attempt, which counts the call for the retry budget;
        ``charge``: an attempt the budget must pay for up front (a hedge), refused if it cannot."""
        with self.lock:
            if first:
                self.budget.deposit(now)
            endpoint = self.pool.pick(now, key, tried)
            if endpoint is None or (charge and not self.budget.withdraw(now)):
                return None
            self.pool.begin(endpoint)
        return endpoint

    def end(self, endpoint: Endpoint, started: float, error: grpc.RpcError | None, *, idempotent: bool = False,
            attempts: int = 1, deadline: float | None = None, retryable: bool = True) -> tuple[float, bool]:
        """Account an attempt that ended (``error`` None: it succeeded); returns (now, whether to try again
        elsewhere). ``retryable`` False for an attempt that may not be repeated whatever happened (a stream)."""
        end = time.monotonic()
        outcome = Outcome.OK if error is None else outcome_of(error)
        with self.lock:
            self.pool.end(endpoint, started, outcome, end)
            retry = (retryable and error is not None
                     and self.rules.may_retry(error, outcome, idempotent, attempts, len(self.pool.endpoints),
                                              deadline, end, self.budget))
        if self.on_attempt is not None:
            self.on_attempt(endpoint.id, started, grpc.StatusCode.OK if error is None else error.code())
        return end, retry

    def abandon(self, endpoint: Endpoint, started: float) -> None:
        """An attempt the channel itself gave up on (cancelled): it says nothing about the instance."""
        with self.lock:
            self.pool.end(endpoint, started, Outcome.ABANDONED, time.monotonic())


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
