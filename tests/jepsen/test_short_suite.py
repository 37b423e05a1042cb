"""CI-sized fault-injection suite: register workload on a real three-member raftkv cluster, ~15 s per run.

The partition run uses the netns back end when it can (root, ``ip netns``, nft): kernel-level drops between
members with their own addresses and mutual TLS; elsewhere it falls back to the proxies.  The pause run also
churns membership (remove, wipe, re-add). Two more runs lose the quorum (majorities killed or paused at
once, partitions with no majority side) and run five members (2+3 splits, two members down); the recovery
checker demands that the cluster serves again after every window.
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
    "kill": dict(nemesis=["kill", "kill-leader"]),
    "pause": dict(nemesis=["pause", "membership"]),
    # No quorum until healed: a majority killed or paused at once, or no side of a partition with a majority.
    "quorum-loss": dict(nemesis=["kill-majority", "pause-majority", "no-majority"], net=NET),
    # Five members: 2+3 splits, two members down at once, 2+2+1.
    "five-members": dict(nemesis=["partition", "kill-minority", "no-majority"], net=NET, nodes=5),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_register_survives(name: str, tmp_path: Path) -> None:
    results = run_and_check(tmp_path, workload="register", time_s=15, clients=6, seed=11, **RUNS[name])
    bad = {n: [a.message for a in r.anomalies[:3]] for n, r in results.items() if r.valid is not True}
    assert not bad, f"{name}: {bad}; see {tmp_path}"
