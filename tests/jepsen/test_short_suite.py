"""CI-sized fault-injection suite: register workload on a real three-member raftkv cluster, ~15 s per run.

The partition run uses the netns back end when it can (root, ``ip netns``, nft): kernel-level drops between
members with their own addresses and mutual TLS; elsewhere it falls back to the proxies.  The pause run also
churns membership (remove, wipe, re-add), so every nemesis family is covered without a fourth run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jepsen_like.nemesis import netns
from tests.jepsen.e2e import needs_raftkv, run_and_check

pytestmark = [needs_raftkv, pytest.mark.slow]

NET = "netns" if netns.available() is None else "proxy"
RUNS = {
    "partition": dict(nemesis=["partition", "client-isolate"], net=NET),
    "kill": dict(nemesis=["kill"]),
    "pause": dict(nemesis=["pause", "membership"]),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_register_survives(name: str, tmp_path: Path) -> None:
    results = run_and_check(tmp_path, workload="register", time_s=15, clients=6, seed=11, **RUNS[name])
    bad = {n: [a.message for a in r.anomalies[:3]] for n, r in results.items() if r.valid is not True}
    assert not bad, f"{name}: {bad}; see {tmp_path}"
