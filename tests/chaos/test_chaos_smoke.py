"""A few seconds of the chaos benchmark, end to end with every real part: the harness works and every
target serves. The figures themselves come from the 120 s run, not from here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TARGETS = {"raftkv", "xds", "haproxy", "nginx"}
FIGURES = {"calls", "ok", "success_rate", "p50_ms", "p99_ms"}


def test_chaos_smoke(tmp_path: Path) -> None:
    out = tmp_path / "chaos"
    run = subprocess.run([sys.executable, "-m", "raftkv.discovery.chaos", "--time", "4", "--rate", "20",
                          "--calibrate", "1", "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                         timeout=280)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert set(result["targets"]) == TARGETS
    for name, target in result["targets"].items():
        assert FIGURES <= set(target), (name, target)
        assert target["ok"] > 0, (name, target, result["errors"])
    assert "sidecar_key_removal_s" in result["targets"]["raftkv"]
    for name in TARGETS:  # 4 s: the sidecar kill at 2 s is the one fault whose end is inside the run
        assert [f["fault"] for f in result["faults"][name]] == ["sidecar-kill"]
    assert set(result["timeline"]) == TARGETS and result["floors"] and "cpu_ratio" in result["calibration"]
    page = (out / "report.html").read_text()
    assert "time since the load started (s)" in page and "calls per second" in page
