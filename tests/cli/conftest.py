"""kvctl runs as a subprocess, exactly as users run it, against one cluster per package."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from raftkv.testing import ClusterHandle, running_cluster
from tests.client.conftest import SERVER_KIND

REPO = Path(__file__).resolve().parents[2]
Run = Callable[..., subprocess.CompletedProcess[str]]


def kvctl_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.kvctl", *args]


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    with running_cluster(kind=SERVER_KIND, base_dir=tmp_path_factory.mktemp("cluster")) as handle:  # type: ignore[arg-type]
        yield handle


@pytest.fixture
def env(cluster: ClusterHandle) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KVCTL_", "ETCDCTL_"))}
    return {**clean, **cluster.env()}


@pytest.fixture
def kvctl(env: dict[str, str]) -> Run:
    """Run kvctl with the cluster's KVCTL_* environment; returns the completed process."""
    def run(*args: str, stdin: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(kvctl_command(*args), input=stdin, capture_output=True, text=True, env=env,
                              cwd=REPO, timeout=timeout)

    return run


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    return f"/{request.node.name}/"
