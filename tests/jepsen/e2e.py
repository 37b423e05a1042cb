"""Shared pieces of the end-to-end suites: when they can run, and one run-then-check call."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jepsen_like.checkers import CheckResult, check_all
from jepsen_like.history import read_events
from jepsen_like.runner import HISTORY, RunConfig, run


def _raftkv_runs() -> bool:
    try:
        r = subprocess.run([sys.executable, "-m", "raftkv.main", "--help"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


needs_raftkv = pytest.mark.skipif(not _raftkv_runs(),
                                  reason="`python -m raftkv.main --help` fails: the raftkv server is not built yet")
needs_etcd = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd (Debian etcd-server) is not installed")


def run_and_check(tmp: Path, **cfg: object) -> dict[str, CheckResult]:
    run(RunConfig(**cfg), tmp)  # type: ignore[arg-type]
    return {r.name: r for r in check_all(read_events(tmp / HISTORY), time_limit=30)}
