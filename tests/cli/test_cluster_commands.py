"""`kvctl cluster up/status/env/down`, with the printed environment used by the real etcdctl."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import REPO, kvctl_command
from tests.client.conftest import SERVER_KIND


def run(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="needs etcdctl")
def test_cluster_round_trip_usable_by_etcdctl(tmp_path: Path) -> None:
    directory = str(tmp_path / "c")
    up = run(*kvctl_command("cluster", "up", "--dir", directory, "--size", "1", "--kind", SERVER_KIND,
                            "--base-port", "0"))
    try:
        assert "eval" in up and "kvctl put hello world" in up
        assert "already running" in run(*kvctl_command("cluster", "up", "--dir", directory))
        status = json.loads(run(*kvctl_command("cluster", "status", "--dir", directory, "-w", "json")))
        assert [(m["name"], m["leader"], m["healthy"]) for m in status["members"]] == [("n1", True, True)]

        exports = run(*kvctl_command("cluster", "env", "--dir", directory)).splitlines()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KVCTL_", "ETCDCTL_"))}
        for line in exports:
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value.strip("'")
        run(*kvctl_command("put", "hello", "world"), env=env)
        assert run("etcdctl", "get", "hello", env=env) == "hello\nworld\n"
    finally:
        down = run(*kvctl_command("cluster", "down", "--dir", directory))
    assert down == "stopped n1\n"
    assert "stopped" in run(*kvctl_command("cluster", "status", "--dir", directory))
