"""The balancer's state for one service: endpoints, which of them may take calls, and the policy's pick.

Pure logic, time passed in; the channels (``balanced.py``, ``aio_balanced.py``) hold a lock around it and do
the I/O. Which endpoints are *candidates* for the next call, in order:

1. Instances known to be unusable are left out: one that said NOT_SERVING on its health stream, one whose
   health stream broke (connection lost), one whose connection just failed (backing off, doubling per
   repeat up to 5 s). These signals come from the instance or the transport, not from guesswork.
2. Instances ejected as outliers (``ejection.py``) are left out, unless that leaves fewer than
   ``panic_threshold`` (50 %, Envoy's and Finagle's default) of all instances: then the pool "panics" and
   ignores ejections, as a guess that may be wrong must not take the service down.
3. If nothing is left, every instance is a candidate: a call that might fail beats a call that surely does.

Envoy's panic mode also ignores failed active health checks; this pool trusts an instance that says it is
NOT_SERVING, and a refused connection, over any threshold.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection, Mapping

import grpc

from raftkv.client.routing import never_connected_status
from raftkv.discovery.ejection import OutlierConfig, OutlierDetector
from raftkv.discovery.endpoint import DEFAULT_ERROR_PENALTY, DEFAULT_TAU, Endpoint, Health
from raftkv.discovery.policies import Policy
from raftkv.discovery.record import Instance

DEFAULT_PANIC_THRESHOLD = 0.5
#: Backoff after a failed connection: first and longest wait before the instance is picked again.
CONNECT_BACKOFF = (0.1, 5.0)

#: Status codes that say something about the instance (it is down, stalled, broken or overloaded), as
#: opposed to the request (NOT_FOUND, INVALID_ARGUMENT, PERMISSION_DENIED, ...), which an instance answers
#: correctly by failing.
INSTANCE_FAULTS = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DATA_LOSS,
})


class Outcome(enum.Enum):
    OK = "ok"                        # answered (an application error about the request counts as answered)
    FAILED = "failed"                # the instance's fault, after the call may have reached it
    NOT_CONNECTED = "not_connected"  # no connection: nothing was sent
    ABANDONED = "abandoned"          # cancelled by us (a hedge that lost the race): says nothing


def outcome_of(code: grpc.StatusCode, details: str | None) -> Outcome:
    """What an attempt that ended with this status says about its instance."""
    if code == grpc.StatusCode.OK:
        return Outcome.OK
    if never_connected_status(code, details):
        return Outcome.NOT_CONNECTED
    return Outcome.FAILED if code in INSTANCE_FAULTS else Outcome.OK


class Pool:
    def __init__(self, policy: Policy, outlier: OutlierConfig | None = None, *,
                 panic_threshold: float = DEFAULT_PANIC_THRESHOLD, tau: float = DEFAULT_TAU,
                 error_penalty: float = DEFAULT_ERROR_PENALTY) -> None:
        if not 0 <= panic_threshold <= 1:
            raise ValueError("panic_threshold must be between 0 and 1")
        self.policy = policy
        self.detector = OutlierDetector(outlier or OutlierConfig())
        self.panic_threshold = panic_threshold
        self._tau, self._error_penalty = tau, error_penalty
        self.endpoints: dict[str, Endpoint] = {}
        self._candidates: list[Endpoint] = []
        self._dirty = True
        self._due = math.inf
        #: True while the last candidate computation ignored ejections (for metrics and tests).
        self.panicking = False

    # ----------------------------------------------------------------- membership

    def update(self, instances: Mapping[str, Instance]) -> tuple[list[Endpoint], list[Endpoint]]:
        """Follow the resolver's instances; returns (added, removed) endpoints. An instance whose address or
        metadata changed is replaced by a fresh endpoint (its connection and statistics were for the old)."""
        added: list[Endpoint] = []
        removed: list[Endpoint] = []
        for instance_id, old in list(self.endpoints.items()):
            new = instances.get(instance_id)
            if new is None or not old.instance.same_endpoint(new):
                removed.append(self.endpoints.pop(instance_id))
        for instance_id, instance in instances.items():
            if instance_id not in self.endpoints:
                endpoint = Endpoint(instance, self._tau, self._error_penalty)
                self.endpoints[instance_id] = endpoint
                added.append(endpoint)
        if added or removed:
            ordered = sorted(self.endpoints.values(), key=lambda e: e.id)
            self.policy.rebuild(ordered)
            self.detector.track([e.id for e in ordered])
            self._dirty = True
        return added, removed

    # ----------------------------------------------------------------- picking

    def candidates(self, now: float) -> list[Endpoint]:
        if self._dirty or now >= self._due:
            self._recompute(now)
        return self._candidates

    def _recompute(self, now: float) -> None:
        self.detector.sweep(now)
        everyone = sorted(self.endpoints.values(), key=lambda e: e.id)
        usable = [e for e in everyone if e.usable(now)]
        healthy = [e for e in usable if not self.detector.is_ejected(e.id)]
        self.panicking = bool(everyone) and len(healthy) < self.panic_threshold * len(everyone)
        self._candidates = (usable if self.panicking else healthy) or everyone
        downs = [e.down_until for e in everyone if e.down_until > now]
        self._due = min([self.detector.next_due(), *downs])
        self._dirty = False

    def pick(self, now: float, key: bytes | None = None, exclude: Collection[str] = ()) -> Endpoint | None:
        """The endpoint for the next attempt, skipping ``exclude`` (instances this call already tried);
        None if there is none."""
        candidates = self.candidates(now)
        if exclude:
            candidates = [e for e in candidates if e.id not in exclude]
            if not candidates:  # every preferred one was tried: any other instance at all?
                candidates = [e for e in self.endpoints.values() if e.id not in exclude and e.usable(now)]
        if not candidates:
            return None
        return self.policy.pick(candidates, key, now)

    # ----------------------------------------------------------------- outcomes

    def begin(self, endpoint: Endpoint) -> None:
        endpoint.outstanding += 1

    def end(self, endpoint: Endpoint, started: float, outcome: Outcome, now: float) -> bool:
        """Account a call's end. True if ``endpoint`` left the pool (``update``) and this was the last call
        in flight to it: its connection has nothing left to carry."""
        endpoint.outstanding -= 1
        if self.endpoints.get(endpoint.id) is not endpoint:
            return endpoint.outstanding == 0  # removed or replaced while the call ran
        if outcome is Outcome.ABANDONED:
            return False
        if outcome is Outcome.NOT_CONNECTED:
            endpoint.connect_failures += 1
            first, limit = CONNECT_BACKOFF
            endpoint.down_until = now + min(limit, first * 2 ** (endpoint.connect_failures - 1))
            self._dirty = True
            return False
        ok = outcome is Outcome.OK
        endpoint.connect_failures = 0
        endpoint.observe(now - started, ok, now)
        if self.detector.record(endpoint.id, ok, now):
            self._dirty = True
        return False

    def set_health(self, instance_id: str, health: Health, now: float) -> None:
        """An active health check's verdict. SERVING after a break also ends a connect backoff and an
        ejection (Envoy readmits on a passing active check)."""
        endpoint = self.endpoints.get(instance_id)
        if endpoint is None or endpoint.health is health:
            return
        endpoint.health = health
        if health is Health.SERVING:
            endpoint.down_until, endpoint.connect_failures = 0.0, 0
            self.detector.readmit(instance_id)
        self._dirty = True
