"""CI-sized fault-injection suite: register workload on a real three-member raftkv cluster, ~20 s per fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.jepsen.e2e import needs_raftkv, run_and_check

pytestmark = [needs_raftkv, pytest.mark.slow]


@pytest.mark.parametrize("fault", ["partition", "kill", "pause"])
def test_register_survives(fault: str, tmp_path: Path) -> None:
    results = run_and_check(tmp_path, workload="register", nemesis=[fault], time_s=15, clients=6, seed=11)
    bad = {name: [a.message for a in r.anomalies[:3]] for name, r in results.items() if r.valid is not True}
    assert not bad, f"{fault}: {bad}; see {tmp_path}"
