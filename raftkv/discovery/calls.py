"""Per-call rules shared by the blocking and asyncio balanced channels: which calls are idempotent, where a
ring-hash key comes from, and whether a failed attempt is tried again elsewhere. Pure.

Retry rules, in order:

1. Never past the caller's deadline: every attempt gets what is left of it, and none starts once it passed.
   ``DEADLINE_EXCEEDED`` is therefore never retried.
2. An attempt that never left the client (gRPC found no connection) is retried on another instance at
   once. It cost no server anything, so it is not charged to the budget (gRFC A6's transparent retries);
   it is bounded by the number of instances.
3. An attempt that may have reached the instance is retried only if the call is idempotent (the caller
   says so: ``idempotent=`` on the channel), its code is in ``retry_codes`` (UNAVAILABLE and CANCELLED
   by default, Istio's choice for gRPC), fewer than ``max_attempts`` (3) attempts were made, and the
   retry budget (``budget.py``) has room.
4. Each retry goes to an instance this call has not tried yet, if there is one.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from raftkv.discovery.budget import RetryBudget
from raftkv.discovery.pool import Outcome

DEFAULT_RETRY_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
DEFAULT_MAX_ATTEMPTS = 3
Metadata = Sequence[tuple[str, str | bytes]] | None
#: ``hash_key(request, metadata)`` returns the affinity key of a call (or None for no affinity).
HashKey = Callable[[Any, Metadata], bytes | str | None]


def idempotency_rule(idempotent: bool | Collection[str] | Callable[[str], bool]) -> Callable[[str], bool]:
    """``True`` (every method), a collection of full method names (``/pkg.Service/Method``) or of service
    names (``pkg.Service``), or a predicate on the full method name."""
    if idempotent is True or idempotent is False:
        answer = bool(idempotent)
        return lambda _method: answer
    if callable(idempotent):
        return idempotent
    names = frozenset(idempotent)
    return lambda method: method in names or method.lstrip("/").split("/", 1)[0] in names


@dataclass(frozen=True)
class CallRules:
    idempotent: Callable[[str], bool] = field(default=idempotency_rule(False))
    retry_codes: frozenset[grpc.StatusCode] = DEFAULT_RETRY_CODES
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    #: Send a second attempt of an idempotent call to another instance if the first has not answered
    #: after this many seconds (None: no hedging).
    hedge_delay: float | None = None
    hash_key: HashKey | None = None
    hash_header: str | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.hedge_delay is not None and not self.hedge_delay > 0:
            raise ValueError("hedge_delay must be positive")
        if self.hash_header is not None and self.hash_header != self.hash_header.lower():
            raise ValueError("hash_header must be lower case (gRPC metadata keys are)")

    def key(self, request: Any, metadata: Metadata) -> bytes | None:
        """The ring-hash key of a call: from ``hash_key`` if given, else the ``hash_header`` metadata value
        (several values joined with ``,``, as gRFC A76 does)."""
        raw: bytes | str | None = None
        if self.hash_key is not None:
            raw = self.hash_key(request, metadata)
        elif self.hash_header is not None and metadata:
            values = [v for k, v in metadata if k == self.hash_header]
            if values:
                raw = b",".join(v if isinstance(v, bytes) else v.encode() for v in values)
        if raw is None:
            return None
        return raw.encode() if isinstance(raw, str) else raw

    def may_retry(self, error: grpc.RpcError, outcome: Outcome, idempotent: bool, attempts: int,
                  instances: int, deadline: float | None, now: float, budget: RetryBudget) -> bool:
        if deadline is not None and now >= deadline:
            return False
        if outcome is Outcome.NOT_CONNECTED:
            return attempts < max(instances, 1) + 1
        if not idempotent or error.code() not in self.retry_codes:
            return False
        return attempts < self.max_attempts and budget.withdraw(now)


class NoInstance(grpc.RpcError, grpc.Call):
    """The error a call fails with when the service has no instance to try: UNAVAILABLE, with the reason."""

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self._details = details

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> tuple[()]:
        return ()

    def trailing_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False
