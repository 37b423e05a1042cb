"""The balanced channels' options, parsed once for the blocking and the asyncio factory."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import grpc

from raftkv.discovery import policies
from raftkv.discovery.budget import RetryBudget
from raftkv.discovery.calls import DEFAULT_MAX_ATTEMPTS, DEFAULT_RETRY_CODES, CallRules, HashKey, idempotency_rule
from raftkv.discovery.ejection import OutlierConfig
from raftkv.discovery.endpoint import DEFAULT_ERROR_PENALTY, DEFAULT_TAU
from raftkv.discovery.pool import DEFAULT_PANIC_THRESHOLD, Pool


@dataclass(frozen=True)
class BalancerOptions:
    policy: str | policies.Policy = "p2c"
    epsilon: float = policies.DEFAULT_EPSILON
    idempotent: bool | Collection[str] | Callable[[str], bool] = False
    retry_codes: Collection[grpc.StatusCode] = DEFAULT_RETRY_CODES
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    hedge_delay: float | None = None
    hash_key: HashKey | None = None
    hash_header: str | None = None
    outlier: OutlierConfig | None = None
    panic_threshold: float = DEFAULT_PANIC_THRESHOLD
    retry_budget: RetryBudget | None = None
    tau: float = DEFAULT_TAU
    error_penalty: float = DEFAULT_ERROR_PENALTY

    def rules(self) -> CallRules:
        return CallRules(idempotency_rule(self.idempotent), frozenset(self.retry_codes), self.max_attempts,
                         self.hedge_delay, self.hash_key, self.hash_header)

    def pool(self) -> Pool:
        return Pool(policies.make(self.policy, epsilon=self.epsilon), self.outlier,
                    panic_threshold=self.panic_threshold, tau=self.tau, error_penalty=self.error_penalty)

    def budget(self) -> RetryBudget:
        return self.retry_budget or RetryBudget()


def split(options: dict[str, Any]) -> tuple[BalancerOptions, dict[str, Any]]:
    """(balancer options, the rest) from a factory's keyword arguments; unknown names fail loudly later."""
    names = BalancerOptions.__dataclass_fields__.keys()
    mine = {k: options.pop(k) for k in list(options) if k in names}
    return BalancerOptions(**mine), options
