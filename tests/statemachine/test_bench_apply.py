"""The apply-cost benchmark still runs (tiny sizes: it asserts it works, not how fast)."""

from __future__ import annotations

import pytest

from raftkv.statemachine import bench_apply


@pytest.mark.parametrize("argv", [["put", "--puts", "32", "--rounds", "1"], ["delete-range", "--keys", "200", "--rounds", "2"]])
def test_each_workload_prints_its_figure(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    bench_apply.main(argv)
    assert "writer-thread CPU per" in capsys.readouterr().out
