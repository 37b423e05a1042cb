"""A registration's lifecycle as a pure plan: lease, key, keep-alive, health gating, re-registration, revoke.

Like ``raftkv.client.routing``, the policy is a generator that yields *steps* ("grant a lease", "put the key",
"probe the instance", "wait this long") and receives each step's outcome; ``registrar.py`` drives it with a
thread and ``aio.py`` with a task, so both twins follow one rule book, and the tests drive it with a fake
clock and scripted outcomes, without sleeping.

The rules a service owner relies on:

- The key is written only with a lease attached, and the lease is refreshed every TTL/3 (two refreshes may
  fail before the lease expires).
- A lost lease (revoked, or expired during a partition longer than the TTL) is noticed at the next refresh
  and replaced: a fresh lease, the key written again.
- With a health check, the key exists only while the check passes. The check is damped as Consul's
  ``success_before_passing``/``failures_before_critical``: it takes ``rise`` consecutive successes to pass and
  ``fall`` consecutive failures to go critical, so a flapping instance does not flap its registration. An
  instance starts critical, as Consul's checks do: it is registered once it has proven healthy.
- Stopping revokes the lease *first*: the key disappears atomically with it, watchers drop the instance, and
  only then does the caller drain in-flight calls.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

from raftkv.client.errors import ClientError, LeaseNotFound
from raftkv.client.sync import keepalive_interval


@dataclass(frozen=True)
class Grant:
    ttl: int


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    lease: int


@dataclass(frozen=True)
class Delete:
    key: str


@dataclass(frozen=True)
class KeepAlive:
    lease: int
    timeout: float


@dataclass(frozen=True)
class Probe:
    """Ask the instance whether it is healthy; the outcome is a bool."""


@dataclass(frozen=True)
class Revoke:
    lease: int


@dataclass(frozen=True)
class Wait:
    """Sleep ``seconds`` unless told to stop; the outcome is True if a stop was requested."""

    seconds: float


Step = Grant | Put | Delete | KeepAlive | Probe | Revoke | Wait
#: What a driver sends back: a lease id (Grant), a TTL (KeepAlive), a bool (Probe, Wait), None (Put, Delete,
#: Revoke) or the ClientError the step raised.
Outcome = int | bool | None | ClientError
Plan = Generator[Step, Outcome, None]


class State(enum.Enum):
    STARTING = "starting"        # nothing written yet
    REGISTERED = "registered"    # the key is in the store, attached to a live lease
    WITHDRAWN = "withdrawn"      # the lease lives but the health check is critical: no key
    RETRYING = "retrying"        # the last step failed (registry unreachable?): trying again
    STOPPED = "stopped"          # lease revoked (or given up): no key


@dataclass
class HealthGate:
    """Consul-style flap damping: ``rise`` consecutive successes to pass, ``fall`` failures to go critical."""

    rise: int = 2
    fall: int = 2
    passing: bool = False
    _streak: int = 0  # consecutive outcomes that disagree with ``passing``

    def __post_init__(self) -> None:
        if self.rise < 1 or self.fall < 1:
            raise ValueError("rise and fall must be at least 1")

    def observe(self, healthy: bool) -> bool:
        """Feed one probe result; returns True if ``passing`` changed."""
        if healthy == self.passing:
            self._streak = 0
            return False
        self._streak += 1
        if self._streak >= (self.rise if healthy else self.fall):
            self.passing, self._streak = healthy, 0
            return True
        return False


@dataclass
class Backoff:
    """Retry delay after a failed step: 0.1 s doubling to ``limit``, so an unreachable registry is not hammered
    but a short outage costs little. The limit stays below a third of the TTL: the key must be back before
    the next refresh would be due."""

    limit: float
    delay: float = 0.1

    def next(self) -> float:
        current = self.delay
        self.delay = min(self.limit, self.delay * 2)
        return current

    def reset(self) -> None:
        self.delay = 0.1


@dataclass
class Lifecycle:
    """One registration's plan and the state it exposes (read by drivers, ``kvctl`` and tests)."""

    key: str
    value: bytes
    ttl: int
    gate: HealthGate | None = None
    probe_interval: float = 1.0
    clock: Callable[[], float] = time.monotonic
    state: State = State.STARTING
    lease: int = 0
    #: How often the key was (re)written, and how often a lease was found lost.
    registrations: int = 0
    leases_lost: int = 0
    refreshes: int = 0
    last_error: ClientError | None = None
    #: (time, state) of every state change, newest last; bounded.
    history: list[tuple[float, State]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.ttl < 1:
            raise ValueError("ttl must be at least 1 second")
        if not self.probe_interval > 0:
            raise ValueError("probe interval must be positive")

    def _set(self, state: State) -> None:
        if state is not self.state:
            self.state = state
            self.history.append((self.clock(), state))
            del self.history[:-32]

    def _failed(self, error: ClientError) -> None:
        self.last_error = error
        self._set(State.RETRYING)

    def run(self) -> Plan:
        interval = keepalive_interval(self.ttl)
        backoff = Backoff(limit=max(0.2, interval / 2))
        written = False
        next_refresh = next_probe = math.inf
        if self.gate is not None:
            next_probe = self.clock()
        while True:
            want = self.gate is None or self.gate.passing
            failed = False
            if not self.lease:
                outcome = yield Grant(self.ttl)
                if isinstance(outcome, ClientError):
                    self._failed(outcome)
                    failed = True
                else:
                    assert isinstance(outcome, int)
                    self.lease, written = outcome, False
                    next_refresh = self.clock() + interval
                    if not want:
                        self._set(State.WITHDRAWN)
            if self.lease and not failed and want != written:
                outcome = yield (Put(self.key, self.value, self.lease) if want else Delete(self.key))
                if isinstance(outcome, LeaseNotFound):
                    self._lease_lost(outcome)
                    continue
                if isinstance(outcome, ClientError):
                    self._failed(outcome)
                    failed = True
                else:
                    written = want
                    if want:
                        self.registrations += 1
                    self._set(State.REGISTERED if want else State.WITHDRAWN)
            if failed:
                if (yield Wait(backoff.next())):
                    break
                continue
            backoff.reset()
            due = min(next_refresh, next_probe)
            if (yield Wait(max(0.0, due - self.clock()))):
                break
            now = self.clock()
            if self.gate is not None and now >= next_probe:
                healthy = yield Probe()
                self.gate.observe(bool(healthy))
                next_probe = now + self.probe_interval
            if self.lease and now >= next_refresh:
                outcome = yield KeepAlive(self.lease, timeout=interval)
                if isinstance(outcome, LeaseNotFound):
                    self._lease_lost(outcome)
                    written = False
                elif isinstance(outcome, ClientError):
                    # Not reachable now: try again sooner; the lease outlives two missed refreshes.
                    self._failed(outcome)
                    next_refresh = self.clock() + interval / 2
                else:
                    assert isinstance(outcome, int)
                    self.refreshes += 1
                    next_refresh = self.clock() + keepalive_interval(outcome)
                    if self.state is State.RETRYING:
                        self._set(State.REGISTERED if written else State.WITHDRAWN)
        if self.lease:
            outcome = yield Revoke(self.lease)  # best effort: if it fails, the lease expires within the TTL
            if isinstance(outcome, ClientError):
                self.last_error = outcome
            self.lease = 0
        self._set(State.STOPPED)

    def _lease_lost(self, error: ClientError) -> None:
        self.lease = 0
        self.leases_lost += 1
        self._failed(error)
