"""The benchmark command runs end to end against a real cluster (a 1 s run of two workloads).

Benchmarks are not tests: this only proves the command, its cluster handling and its fsync and CPU scrape work.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from raftkv.bench.stats import percentile


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([], 0.5) == 0.0


def test_bench_runs_for_one_second(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "raftkv.bench", "--duration", "1", "--workloads", "put c=64,get-lc=64",
         "--dir", str(tmp_path), "--ceiling"],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stdout.splitlines() if line.startswith("raftkv ")]
    assert [line.split()[1:3] for line in lines] == [["put", "c=64"], ["get-l", "c=64"]], run.stdout
    for line in lines:
        fields = line.split()
        assert int(fields[3].rstrip("/s").replace(",", "")) > 0, line
        assert fields[fields.index("fsyncs/s") + 1] != "n/a", line
        busiest, total = fields[fields.index("cpu-us/op") + 1].replace(",", "").split("/")
        assert 0 < float(busiest) <= float(total), line
        assert fields[-1] == "0", line  # no errors
    put_fsyncs = float(lines[0].split()[lines[0].split().index("fsyncs/s") + 1].replace(",", ""))
    assert put_fsyncs > 0
    # The ceiling server, measured after the cluster: no fsyncs, its own CPU read from /proc.
    ceiling = [line.split() for line in run.stdout.splitlines() if line.startswith("ceiling ")]
    assert [fields[1:3] for fields in ceiling] == [["put", "c=64"], ["get-l", "c=64"]], run.stdout
    for fields in ceiling:
        assert fields[fields.index("fsyncs/s") + 1] == "0" and fields[-1] == "0", fields
        assert float(fields[fields.index("cpu-us/op") + 1].split("/")[0].replace(",", "")) > 0, fields
    assert "ceiling/s" in run.stdout, run.stdout
