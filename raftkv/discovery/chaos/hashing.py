"""Bounded-load consistent hashing across an instance join, measured on the channel's own ring_hash policy.

The setting of Mirrokni, Thorup and Zadimoghaddam: K keys, each holding one call in flight, placed one after
the other on N instances; then an instance joins and the same keys are placed again, in the same order.
A key "stays" when it lands on the instance it had. Consistent hashing must move the share the newcomer
takes (1/(N+1) of the keys) and bounded loads may move a few more to respect the cap; so the figure that
shows stability is the share of keys *not taken by the newcomer* that stayed where they were. The cap: no
instance above ⌈(1+ε)·K/N⌉ keys, i.e. (1+ε) times the mean.
"""

from __future__ import annotations

import collections
import random
from typing import Any

from raftkv.discovery.endpoint import Endpoint
from raftkv.discovery.policies import DEFAULT_EPSILON, RingHash
from raftkv.discovery.record import Instance

#: The floors: share of keys that stay, and the cap on the busiest instance.
MIN_KEPT = 0.90


def _place(policy: RingHash, endpoints: list[Endpoint], keys: list[bytes]) -> dict[bytes, str]:
    for e in endpoints:
        e.outstanding = 0
    policy.rebuild(endpoints)
    homes = {}
    for key in keys:
        chosen = policy.pick(endpoints, key, 0.0)
        chosen.outstanding += 1
        homes[key] = chosen.id
    return homes


def join(instances: int, keys: int = 10_000, epsilon: float = DEFAULT_EPSILON, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    names = [f"instance-{i}" for i in range(instances + 1)]
    endpoints = [Endpoint(Instance(n, f"127.0.0.1:{20000 + i}")) for i, n in enumerate(names)]
    key_list = [f"user-{rng.getrandbits(64):016x}".encode() for _ in range(keys)]
    policy = RingHash(epsilon=epsilon, rng=rng)
    before = _place(policy, endpoints[:-1], key_list)
    after = _place(policy, endpoints, key_list)
    newcomer = names[-1]
    not_taken = [k for k in key_list if after[k] != newcomer]
    kept = sum(1 for k in not_taken if after[k] == before[k])
    loads = collections.Counter(after.values())
    mean = keys / len(endpoints)
    worst = max(loads.values()) / mean
    kept_share = kept / len(not_taken)
    return {
        "instances": f"{instances} -> {instances + 1}", "keys": keys, "epsilon": epsilon,
        "kept_overall": round(sum(1 for k in key_list if after[k] == before[k]) / keys, 4),
        "kept_of_keys_not_taken_by_newcomer": round(kept_share, 4),
        "newcomer_share": round(loads[newcomer] / keys, 4),
        "max_load_over_mean": round(worst, 4),
        "met": kept_share >= MIN_KEPT and worst <= 1 + epsilon,
    }


def measure() -> dict[str, Any]:
    """Joins at the benchmark's size (3 -> 4) and at a larger one (10 -> 11); met if both are."""
    runs = [join(3), join(10)]
    return {"runs": runs, "met": all(r["met"] for r in runs)}
