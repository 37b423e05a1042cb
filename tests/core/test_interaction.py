"""Golden interaction tests: run each tests/core/testdata/*.txt script and compare the full transcript.

``REWRITE=1 pytest tests/core`` regenerates the expected outputs; review the diff like code.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.core.interaction import run_script

TESTDATA = Path(__file__).parent / "testdata"
SCRIPTS = sorted(TESTDATA.glob("*.txt"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_interaction(path: Path) -> None:
    expected = path.read_text()
    actual = run_script(expected)
    if os.environ.get("REWRITE") == "1":
        path.write_text(actual)
        return
    assert actual == expected


def test_required_scripts_exist() -> None:
    names = {p.stem for p in SCRIPTS}
    required = {
        "election", "prevote", "checkquorum", "log_conflict_repair", "snapshot_catchup", "leader_transfer",
        "membership_change", "read_index_follower",
    }
    assert required <= names
