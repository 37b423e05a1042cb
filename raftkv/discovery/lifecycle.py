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
- A probe that gets *no answer* in time is not a failure but an unknown (``HealthGate``): on a loaded
  machine every probe times out together, and counting that as ``fall`` failures would withdraw every
  instance of a service at once although each was serving. An unknown keeps the state the gate is in; a
  passing instance goes critical for silence only after ``unknown_after`` seconds without any answer.
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
    """Ask the instance whether it is healthy; the outcome is a ``Verdict`` (or a bool, or None for no
    answer: see ``Verdict.of``)."""


@dataclass(frozen=True)
class Revoke:
    lease: int


@dataclass(frozen=True)
class Wait:
    """Sleep ``seconds`` unless told to stop; the outcome is True if a stop was requested."""

    seconds: float


class Verdict(enum.Enum):
    """What one health probe learnt. The distinction that matters is between an instance that *answered*
    that it is not healthy and one that did not answer in time (gRPC's health-checking protocol leaves a
    timeout's meaning to the client; Envoy and Consul both tell a refusal from silence)."""

    PASS = "pass"          # answered SERVING (TCP: the connection was accepted)
    FAIL = "fail"          # answered something else (NOT_SERVING, UNIMPLEMENTED, ...) or refused the connection
    UNKNOWN = "unknown"    # no answer within the probe's timeout: the instance, or this machine, is slow

    @staticmethod
    def of(outcome: object) -> Verdict:
        """A probe's outcome as a verdict: a ``Verdict`` as is, None (a callable's "no answer") as
        UNKNOWN, anything else by its truth."""
        if isinstance(outcome, Verdict):
            return outcome
        if outcome is None:
            return Verdict.UNKNOWN
        return Verdict.PASS if outcome else Verdict.FAIL


Step = Grant | Put | Delete | KeepAlive | Probe | Revoke | Wait
#: What a driver sends back: a lease id (Grant), a TTL (KeepAlive), a bool (Wait), a Verdict, bool or None
#: (Probe), None (Put, Delete, Revoke) or the ClientError the step raised.
Outcome = int | bool | Verdict | None | ClientError
Plan = Generator[Step, Outcome, None]


class State(enum.Enum):
    STARTING = "starting"        # nothing written yet
    REGISTERED = "registered"    # the key is in the store, attached to a live lease
    WITHDRAWN = "withdrawn"      # the lease lives but the health check is critical: no key
    RETRYING = "retrying"        # the last step failed (registry unreachable?): trying again
    STOPPED = "stopped"          # lease revoked (or given up): no key


#: Seconds without any answer from the instance before a passing check goes critical. Long enough to ride
#: out a load spike, a pause for a core dump or a debugger, a slow GC; a hung instance's calls are ejected by
#: the callers' outlier detection long before (five consecutive failures). Envoy ejects for 30 s by default.
UNKNOWN_AFTER = 30.0


@dataclass
class HealthGate:
    """Consul-style flap damping: ``rise`` consecutive successes to pass, ``fall`` failures to go critical,
    and silence treated as unknown, not as failure (the one owner of that rule).

    - PASS: counts toward ``rise`` while critical; while passing, clears the failure streak.
    - FAIL (an answer): counts toward ``fall`` while passing; while critical, breaks the ``rise`` streak.
    - UNKNOWN (no answer in time): keeps the current state. It neither counts toward ``fall`` nor clears
      it; it breaks a ``rise`` streak (an instance that does not answer has not proven healthy). A passing
      gate goes critical when no probe has been answered for ``unknown_after`` seconds."""

    rise: int = 2
    fall: int = 2
    unknown_after: float = UNKNOWN_AFTER
    passing: bool = False
    #: The latest verdict; probes that got no answer, in all; why the gate last went critical ("" if never).
    last: Verdict | None = None
    unknowns: int = 0
    reason: str = ""
    _streak: int = 0  # consecutive answers that disagree with ``passing``
    _answered: float = 0.0  # when a probe was last answered (meaningful while passing)

    def __post_init__(self) -> None:
        if self.rise < 1 or self.fall < 1:
            raise ValueError("rise and fall must be at least 1")
        if not self.unknown_after > 0:
            raise ValueError("unknown_after must be positive")

    def observe(self, verdict: Verdict | bool, now: float) -> bool:
        """Feed one probe's verdict at monotonic time ``now``; returns True if ``passing`` changed."""
        verdict = self.last = Verdict.of(verdict)
        if verdict is Verdict.UNKNOWN:
            self.unknowns += 1
            if not self.passing:
                self._streak = 0
                return False
            if now - self._answered < self.unknown_after:
                return False
            self.passing, self._streak = False, 0
            self.reason = f"no answer for {self.unknown_after:g}s"
            return True
        self._answered = now
        healthy = verdict is Verdict.PASS
        if healthy == self.passing:
            self._streak = 0
            return False
        self._streak += 1
        if self._streak >= (self.rise if healthy else self.fall):
            self.passing, self._streak = healthy, 0
            if not healthy:
                self.reason = f"{self.fall} failing check{'s' if self.fall > 1 else ''}"
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
                verdict = yield Probe()
                self.gate.observe(Verdict.of(verdict), self.clock())
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
